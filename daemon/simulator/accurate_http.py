"""Accurate's HTTP surface: the account host and the data hosts.

Handlers here are synchronous and run under the model lock; the request
pipeline in app.py adds rate limits, latency, faults and logging around them.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from daemon.simulator import wire
from daemon.simulator.accurate import AccurateModel, Item, NotFoundError, Warehouse
from daemon.simulator.accurate_auth import AccurateAuth
from daemon.simulator.clock import parse_last_update
from daemon.simulator.documents import KINDS
from daemon.simulator.listing import (
    ListError,
    Row,
    apply_filters,
    page_of,
    parse_filters,
    requested_fields,
    select_fields,
    sort_rows,
)
from daemon.simulator.server import Request, Response, json_response

API_PREFIX = "/accurate/api/"
NOT_FOUND = "Data tidak ditemukan atau sudah dihapus"
TOO_MANY = "Terlalu banyak permintaan"
ITEM_NOT_FOUND = "Barang & Jasa tidak ditemukan atau sudah dihapus"
WAREHOUSE_NOT_FOUND = "Gudang tidak ditemukan"

_DOCUMENT_FILTERS = {"transDate", "number", "id", "approvalStatus", "lastUpdate"}
_ITEM_FILTERS = {"lastUpdate", "suspended", "itemType", "no", "id"}
_WAREHOUSE_FILTERS = {"lastUpdate", "suspended", "name", "id"}


def failure(text: str, status: int = 200) -> Response:
    return json_response({"s": False, "d": [text]}, status=status)


def redirect(request: Request, base_url: str) -> Response:
    """308 to the same path and query on another host (reference §1)."""
    location = base_url + request.path + (f"?{request.query}" if request.query else "")
    return json_response(
        {"s": False, "d": ["Database moved"]},
        status=308,
        headers=[("Location", location)],
    )


class AccurateService:
    def __init__(
        self,
        model: AccurateModel,
        auth: AccurateAuth,
        data_urls: Callable[[], list[str]],
    ) -> None:
        self.model = model
        self.auth = auth
        self._data_urls = data_urls
        self._item_rows: dict[int, tuple[tuple[Any, ...], Row]] = {}

    @property
    def current_host_url(self) -> str:
        return self._data_urls()[self.model.current_host]

    # ---------------------------------------------------------- account host
    def account(self, request: Request) -> Response:
        with self.model.lock:
            if request.path == "/api/api-token.do":
                return self._api_token(request)
            if request.path == "/oauth/token" and request.method == "POST":
                return self.auth.oauth_token(request)
            if request.path == "/api/open-db.do":
                return self.auth.open_db(request, self.current_host_url)
            if request.path == "/api/db-refresh-session.do":
                return self.auth.refresh_session(request, self.current_host_url)
            return failure("Not Found", status=404)

    def _api_token(self, request: Request) -> Response:
        config = self.model.config.accurate
        if request.method not in config.api_token_methods:
            return failure("Method Not Allowed", status=405)
        refused = self.auth.check(request)
        if refused is not None:
            return refused
        database = {
            "id": config.database_id,
            "alias": config.database_alias,
            "host": self.current_host_url,
        }
        body = {
            config.api_token_db_key: database,
            "application": {"name": "stocksync simulator"},
            "user": {"id": 10000, "email": "sim@example.com", "fullName": "Simulator"},
            "tokenType": "api",
        }
        return json_response({"s": True, "d": body})

    # ------------------------------------------------------------ data hosts
    def data(self, request: Request, host_index: int) -> Response:
        with self.model.lock:
            if host_index != self.model.current_host:
                return redirect(request, self.current_host_url)
            refused = self.auth.check(request)
            if refused is not None:
                return refused
            if request.method not in ("GET", "POST"):
                return failure("Method Not Allowed", status=405)
            return self._route(request)

    def _route(self, request: Request) -> Response:
        if not request.path.startswith(API_PREFIX):
            return failure("Not Found", status=404)
        module, _, action = request.path[len(API_PREFIX) :].rpartition("/")
        handler = self._handlers().get((module, action))
        if handler is not None:
            return handler(request)
        if module in KINDS and action in ("list.do", "detail.do"):
            if action == "list.do":
                return self._document_list(request, module)
            return self._document_detail(request, module)
        return failure("Not Found", status=404)

    def _handlers(self) -> dict[tuple[str, str], Callable[[Request], Response]]:
        return {
            ("item", "list.do"): self._item_list,
            ("item", "detail.do"): self._item_detail,
            ("item", "list-stock.do"): self._list_stock,
            ("item", "get-stock.do"): self._get_stock,
            ("warehouse", "list.do"): self._warehouse_list,
        }

    # ------------------------------------------------------------- documents
    def _document_list(self, request: Request, kind: str) -> Response:
        rows = [
            self.model.render_document(doc, lines=False)
            for doc in self.model.visible_documents(kind)
        ]
        allowed = set(_DOCUMENT_FILTERS)
        if kind in self.model.config.accurate.kinds_without_last_update_filter:
            allowed.discard("lastUpdate")
        return self._list(request, kind, rows, allowed)

    def _document_detail(self, request: Request, kind: str) -> Response:
        params = request.params()
        for doc in self.model.visible_documents(kind):
            if params.get("id") == str(doc.id) or params.get("number") == doc.number:
                row = self._shown(kind, self.model.render_document(doc))
                return json_response({"s": True, "d": row})
        return failure(
            NOT_FOUND, status=self.model.config.accurate.deleted_detail_status
        )

    # ----------------------------------------------------- items, warehouses
    def _item_list(self, request: Request) -> Response:
        rows = [self._item_row(item) for item in self.model.items.values()]
        return self._list(request, "item", rows, _ITEM_FILTERS)

    def _item_row(self, item: Item) -> Row:
        """The item's list row, rendered again only when it or any stock changed
        (paging a large catalogue renders every row for every page)."""
        version = (
            self.model.stock_generation,
            item.opt_lock,
            item.last_update,
            item.no,
            item.name,
            item.item_type,
            item.unit,
            item.suspended,
            item.upc_no,
        )
        cached = self._item_rows.get(item.id)
        if cached is not None and cached[0] == version:
            return cached[1]
        row = self.model.render_item(item)
        self._item_rows[item.id] = (version, row)
        return row

    def _item_detail(self, request: Request) -> Response:
        item = self._find_item(request.params())
        if item is None:
            return failure(ITEM_NOT_FOUND)
        return json_response({"s": True, "d": self.model.render_item_detail(item)})

    def _find_item(self, params: dict[str, str]) -> Item | None:
        wanted = _int_or_none(params.get("id") or "")
        by_id = self.model.items.get(wanted) if wanted is not None else None
        if by_id is not None and params.get("id") == str(by_id.id):
            return by_id
        for item in self.model.items.values():
            if params.get("id") == str(item.id) or params.get("no") == item.no:
                return item
        return None

    def _warehouse_list(self, request: Request) -> Response:
        show_transit = self.model.config.accurate.list_transit_warehouse
        rows = [
            self.model.render_warehouse(wh)
            for wh in self.model.warehouses.values()
            if show_transit or not wh.system
        ]
        return self._list(request, "warehouse", rows, _WAREHOUSE_FILTERS)

    # ----------------------------------------------------------------- stock
    def _list_stock(self, request: Request) -> Response:
        """On hand per item in one warehouse (or all), in unit1."""
        params = request.params()
        try:
            warehouses = self._stock_warehouses(params)
        except NotFoundError:
            return failure(WAREHOUSE_NOT_FOUND)
        self.model.commit_due()
        touched = self._touched_items(warehouses)
        listed = [
            item
            for item in self.model.items.values()
            if item.item_type == "INVENTORY" and (touched is None or item.id in touched)
        ]
        config = self.model.config.accurate
        page = page_of(listed, params, config.default_page_size, config.max_page_size)
        # Only the page is rendered: a large catalogue is paged many times.
        rows = [self._stock_row(item, warehouses) for item in page.rows]
        return json_response({"s": True, "d": rows, "sp": page.sp})

    def _stock_warehouses(self, params: dict[str, str]) -> list[Warehouse]:
        if params.get("warehouseId"):
            found = self.model.warehouses.get(_int_or_none(params["warehouseId"]) or -1)
            if found is None:
                raise NotFoundError(params["warehouseId"])
            return [found]
        if params.get("warehouseName"):
            return [self.model.warehouse_by_name(params["warehouseName"])]
        return list(self.model.warehouses.values())

    def _touched_items(self, warehouses: list[Warehouse]) -> set[int] | None:
        """Items with recorded stock in `warehouses`; None when all are listed."""
        if not self.model.config.accurate.list_stock_omits_untouched:
            return None
        ids = {wh.id for wh in warehouses}
        return {item for item, wh in self.model.touched if wh in ids}

    def _stock_row(self, item: Item, warehouses: list[Warehouse]) -> Row:
        quantity = self._on_hand(item, warehouses)
        row = {
            "id": item.id,
            "no": item.no,
            "name": item.name,
            "quantity": wire.quantity(quantity),
            "quantityInAllUnit": f"{format(quantity.normalize(), 'f')} {item.unit}",
            "upcNo": item.upc_no,
        }
        odd = self.model.config.accurate.odd_item_balance
        for warehouse in warehouses if odd else []:
            key = f"{item.no}/{warehouse.name}"
            if key in odd:
                row["quantity"] = odd[key]
        return row

    def _on_hand(self, item: Item, warehouses: list[Warehouse]) -> Decimal:
        stock = self.model.stock
        return sum(
            (stock.get((item.id, wh.id), Decimal(0)) for wh in warehouses), Decimal(0)
        )

    def _get_stock(self, request: Request) -> Response:
        """`d.availableStock` of one item in one warehouse (empty name: all)."""
        params = request.params()
        no = params.get("no", "")
        item = self._find_item({"no": no}) if no else None
        if item is None:
            return failure(f"Barang & Jasa dengan nomor {no} tidak ditemukan")
        try:
            warehouses = self._stock_warehouses(
                {"warehouseName": params.get("warehouseName", "")}
            )
        except NotFoundError:
            return failure(WAREHOUSE_NOT_FOUND)
        self.model.commit_due()
        quantity = self._on_hand(item, warehouses)
        body = {"no": item.no, "availableStock": wire.quantity(quantity)}
        return json_response({"s": True, "d": body})

    # ----------------------------------------------------------- list.do core
    def _list(
        self, request: Request, table: str, rows: list[Row], allowed: set[str]
    ) -> Response:
        params = request.params()
        try:
            rows = apply_filters(rows, parse_filters(params), allowed)
        except ListError as error:
            return failure(str(error))
        rows = self._order(rows, table, params.get("sp.sort"))
        config = self.model.config.accurate
        page = page_of(rows, params, config.default_page_size, config.max_page_size)
        raw = request.raw_param("fields")
        names = requested_fields(raw, config.literal_commas_only)
        chosen = [select_fields(self._shown(table, row), names) for row in page.rows]
        return json_response({"s": True, "d": chosen, "sp": page.sp})

    def _shown(self, table: str, row: Row) -> Row:
        """The row with `lastUpdate` as the `odd_last_update` switch shows it;
        applied after filtering and sorting, which use the true stamp."""
        odd = self.model.config.accurate.odd_last_update
        if not odd or "lastUpdate" not in row:
            return row
        name = row.get("number", row.get("no", row.get("name")))
        form = odd.get(f"{table}/{name}", odd.get(table))
        if form is None:
            return row
        moment = parse_last_update(row["lastUpdate"])
        return {**row, "lastUpdate": moment.strftime(form)}  # a copy: rows are cached

    def _order(self, rows: list[Row], table: str, sort: str | None) -> list[Row]:
        config = self.model.config.accurate
        if config.order == "random":
            rows = sorted(rows, key=lambda r: self.model.random_rank(table, r["id"]))
        elif config.order == "newest_first":
            rows = sorted(rows, key=_newest_key, reverse=True)
        else:
            rows = sorted(rows, key=lambda r: int(r["id"]))
        if config.honour_sort and sort:
            rows = sort_rows(rows, sort)
        return rows


def _newest_key(row: Row) -> tuple[Any, int]:
    return (parse_last_update(row["lastUpdate"]), int(row["id"]))


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
