"""The control API under `/_sim/` on the account host (part of neither service).

GET    /_sim/state                   both sides' stock and catalogue
GET    /_sim/history                 every applied Forstok push
GET    /_sim/requests                request-log summary
GET    /_sim/faults                  the installed fault plan
POST   /_sim/faults                  install a plan {"rules": [...]}
POST   /_sim/reset-log               forget the request log
POST   /_sim/business                {"steps": N} or {"every_kind": true}
POST   /_sim/switches                {"accurate": {...}, "forstok": {...}}
POST   /_sim/documents               create one document
PATCH  /_sim/documents/<kind>/<id>   edit it
DELETE /_sim/documents/<kind>/<id>   delete it
POST   /_sim/items                   add an item
POST   /_sim/opening-balance         {"item","warehouse","quantity"}, optional
                                     "asOf", "lastUpdate"
POST   /_sim/stock                   {"item","warehouse","quantity"}: adjust to it
POST   /_sim/forstok/reserved        {"sku","warehouse_id","reserved"}
POST   /_sim/move-database           {"host": index into accurate_data_urls}
POST   /_sim/expire                  any of {"accurate_tokens": true,
                                     "accurate_sessions": true, "forstok_tokens": true}
POST   /_sim/revoke                  {"revoked": true|false}: the Accurate API token
POST   /_sim/clock                   {"set": ISO-8601} or {"advance_s": N} (ManualClock)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from daemon.simulator.accurate import LineSpec
from daemon.simulator.clock import ManualClock, parse_date
from daemon.simulator.config import apply_switches
from daemon.simulator.documents import KINDS
from daemon.simulator.faults import FaultPlan
from daemon.simulator.server import Request, Response, json_response

if TYPE_CHECKING:
    from daemon.simulator.app import Simulator

Body = dict[str, Any]
Action = Callable[["Simulator", Body], Any]


def handle(sim: Simulator, request: Request) -> Response:
    route = request.path[len("/_sim/") :].strip("/")
    try:
        body = json.loads(request.body) if request.body else {}
        result = _dispatch(sim, request.method, route, body)
    except (ValueError, KeyError, TypeError, ArithmeticError) as error:
        return json_response({"error": str(error)}, status=400)
    if result is None:
        return json_response({"error": f"no control route {route}"}, status=404)
    return json_response(result)


def _dispatch(sim: Simulator, method: str, route: str, body: Body) -> Any:
    if route.startswith("documents/"):
        return _document_route(sim, method, route, body)
    action = _ROUTES.get((method, route))
    return None if action is None else action(sim, body)


# ---------------------------------------------------------------- reading
def state(sim: Simulator, _: Body | None = None) -> Body:
    """Both services' state as JSON, for tests written in other languages."""
    with sim.lock:
        accurate = sim.accurate
        stock = [
            {"item": item, "warehouse": warehouse, "quantity": quantity}
            for (item, warehouse), quantity in sorted(accurate.stock_snapshot().items())
        ]
        forstok = [
            {
                "sku": sku,
                "warehouse_id": warehouse_id,
                "on_hand": p.on_hand,
                "reserved": p.reserved,
                "available": p.available,
            }
            for (sku, warehouse_id), p in sorted(sim.forstok.positions.items())
        ]
        return {
            "clock": sim.config.clock.now().isoformat(),
            "accurate": {
                "stock": stock,
                "current_host": sim.accurate_data_urls[accurate.current_host],
                "documents": {k: len(accurate.documents[k]) for k in KINDS},
                "stats": vars(accurate.stats),
            },
            "forstok": {
                "stock": forstok,
                "products": sim.forstok.products,
                "warehouses": sim.forstok.warehouses,
            },
        }


def _history(sim: Simulator, _: Body) -> Any:
    return [push.as_dict() for push in sim.forstok.history_of()]


def _requests(sim: Simulator, _: Body) -> Any:
    return sim.requests.summary()


def _faults(sim: Simulator, _: Body) -> Any:
    return {"rules": sim.faults.describe()}


# ---------------------------------------------------------------- changing
def _install_faults(sim: Simulator, body: Body) -> Any:
    sim.install_faults(FaultPlan.from_json(body))
    return {"installed": len(sim.faults.rules)}


def _reset_log(sim: Simulator, _: Body) -> Any:
    sim.requests.reset()
    return {"ok": True}


def _business(sim: Simulator, body: Body) -> Any:
    if body.get("every_kind"):
        return {"actions": sim.business.every_kind_once()}
    return {"actions": sim.business.run(int(body.get("steps", 1)))}


def _switches(sim: Simulator, body: Body) -> Any:
    apply_switches(sim.config.accurate, body.get("accurate", {}))
    apply_switches(sim.config.forstok, body.get("forstok", {}))
    return {"ok": True}


def _add_item(sim: Simulator, body: Body) -> Any:
    item = sim.accurate.add_item(
        body["no"],
        body.get("name"),
        item_type=body.get("itemType", "INVENTORY"),
        unit=body.get("unit", "PCS"),
        suspended=bool(body.get("suspended", False)),
        last_update=body.get("lastUpdate"),
    )
    return {"id": item.id, "no": item.no}


def _opening(sim: Simulator, body: Body) -> Any:
    as_of = body.get("asOf")
    item = sim.accurate.set_opening_balance(
        body["item"],
        body["warehouse"],
        _number(body["quantity"]),
        as_of=parse_date(as_of) if as_of else None,
        last_update=body.get("lastUpdate"),
    )
    return {"id": item.id, "optLock": item.opt_lock}


def _stock(sim: Simulator, body: Body) -> Any:
    doc = sim.accurate.adjust_stock_to(
        body["item"],
        body["warehouse"],
        _number(body["quantity"]),
        last_update=body.get("lastUpdate"),
    )
    return {"document": None if doc is None else sim.accurate.render_document(doc)}


def _reserved(sim: Simulator, body: Body) -> Any:
    sim.forstok.set_reserved(
        body["sku"], int(body["warehouse_id"]), int(body["reserved"])
    )
    return {"ok": True}


def _move(sim: Simulator, body: Body) -> Any:
    host = int(body.get("host", 1))
    if not 0 <= host < len(sim.accurate_data_urls):
        raise ValueError(f"no data host {host}")
    sim.accurate.current_host = host
    return {"host": sim.accurate_data_urls[host]}


def _expire(sim: Simulator, body: Body) -> Any:
    with sim.lock:
        if body.get("accurate_tokens"):
            sim.accurate_auth.expire_access_tokens()
        if body.get("accurate_sessions"):
            sim.accurate_auth.expire_sessions()
        if body.get("forstok_tokens"):
            sim.forstok.expire_tokens()
    return {"ok": True}


def _revoke(sim: Simulator, body: Body) -> Any:
    sim.accurate_auth.api_token_revoked = bool(body.get("revoked", True))
    return {"revoked": sim.accurate_auth.api_token_revoked}


def _clock(sim: Simulator, body: Body) -> Any:
    clock = sim.config.clock
    if not isinstance(clock, ManualClock):
        raise ValueError("the simulator's clock is not a ManualClock")
    if "set" in body:
        clock.set(datetime.fromisoformat(body["set"]))
    if "advance_s" in body:
        clock.advance(float(body["advance_s"]))
    return {"clock": clock.now().isoformat()}


# --------------------------------------------------------------- documents
def _document_route(sim: Simulator, method: str, route: str, body: Body) -> Any:
    parts = route.split("/")
    if method != "POST" and len(parts) == 3:
        kind, doc_id = parts[1], int(parts[2])
        if method == "PATCH":
            fields = _document_fields(body, kind)
            doc = sim.accurate.edit_document(kind, doc_id, **fields)
            return sim.accurate.render_document(doc)
        if method == "DELETE":
            doc = sim.accurate.delete_document(kind, doc_id)
            return {"deleted": doc.id, "number": doc.number}
    return None


def _create_document(sim: Simulator, body: Body) -> Any:
    fields = _document_fields(body, body["kind"])
    if "lines" not in fields:
        raise ValueError("a document needs lines")
    doc = sim.accurate.create_document(
        body["kind"],
        number=body.get("number"),
        visible_in_s=body.get("visibleInS"),
        **fields,
    )
    return sim.accurate.render_document(doc)


def _document_fields(body: Body, kind: str) -> dict[str, Any]:
    """Keyword arguments for create/edit from the JSON body's known keys."""
    names = {
        "transDate": "trans_date",
        "lastUpdate": "last_update",
        "approvalStatus": "approval_status",
        "type": "doc_type",
        "warehouse": "warehouse",
        "referenceWarehouse": "reference_warehouse",
    }
    fields = {arg: body[key] for key, arg in names.items() if key in body}
    if "lines" in body:
        fields["lines"] = [_line(kind, line) for line in body["lines"]]
    return fields


def _line(kind: str, data: Body) -> LineSpec:
    quantity = _number(data["quantity"])
    line_type = data.get("type")
    # Convenience for item adjustments: a signed quantity picks the type.
    if kind == "item-adjustment" and line_type is None:
        line_type = "ADJUSTMENT_OUT" if quantity < 0 else "ADJUSTMENT_IN"
        quantity = abs(quantity)
    return LineSpec(
        item=data["item"],
        quantity=quantity,
        warehouse=data.get("warehouse"),
        unit=data.get("unit"),
        unit_ratio=_number(data.get("unitRatio", 1)),
        line_type=line_type,
        linked_id=data.get("linkedId"),
    )


def _number(value: Any) -> Decimal:
    return Decimal(str(value))


_ROUTES: dict[tuple[str, str], Action] = {
    ("GET", "state"): state,
    ("GET", "history"): _history,
    ("GET", "requests"): _requests,
    ("GET", "faults"): _faults,
    ("POST", "faults"): _install_faults,
    ("POST", "reset-log"): _reset_log,
    ("POST", "business"): _business,
    ("POST", "switches"): _switches,
    ("POST", "documents"): _create_document,
    ("POST", "items"): _add_item,
    ("POST", "opening-balance"): _opening,
    ("POST", "stock"): _stock,
    ("POST", "forstok/reserved"): _reserved,
    ("POST", "move-database"): _move,
    ("POST", "expire"): _expire,
    ("POST", "revoke"): _revoke,
    ("POST", "clock"): _clock,
}
