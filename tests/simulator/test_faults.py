"""Fault plans: windows, canned answers and transport faults."""

from __future__ import annotations

import time

import httpx
import pytest

from daemon.simulator import FaultAction, FaultPlan, FaultRule, Simulator
from simulator.simhttp import Forstok


def _once(
    action: FaultAction,
    endpoint: str = "*/list.do",
    *,
    after: int = 0,
    count: int | None = None,
    every: int | None = None,
) -> FaultPlan:
    """A plan of one Accurate rule."""
    rule = FaultRule(
        action, "accurate", endpoint, after=after, count=count, every=every
    )
    return FaultPlan([rule])


async def test_count_window_hits_only_the_chosen_requests(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """after=1, count=2: the 2nd and 3rd matching calls fail, then all pass;
    non-matching endpoints are never touched."""
    action = FaultAction("status", status=503)
    sim.install_faults(_once(action, "*/item/list.do", after=1, count=2))
    statuses = [(await accurate.get("/item/list.do")).status_code for _ in range(5)]
    other = await accurate.get("/warehouse/list.do")
    assert statuses == [200, 503, 503, 200, 200]
    assert other.status_code == 200
    assert sim.requests.entries("accurate")[1].fault == "status"


async def test_every_kth_request(sim: Simulator, accurate: httpx.AsyncClient) -> None:
    """every=3 hits the 3rd, 6th, ... matching call."""
    sim.install_faults(_once(FaultAction("status", status=502), every=3))
    statuses = [(await accurate.get("/item/list.do")).status_code for _ in range(6)]
    assert statuses == [200, 200, 502, 200, 200, 502]


async def test_plan_from_json_with_http_date_retry_after(
    sim: Simulator, control: httpx.AsyncClient, accurate: httpx.AsyncClient
) -> None:
    """A plan posted to /_sim/faults installs; 429 carries an HTTP-date."""
    plan = {
        "rules": [
            {
                "service": "accurate",
                "endpoint": "*/list.do",
                "count": 1,
                "action": {
                    "kind": "status",
                    "status": 429,
                    "retry_after": 5,
                    "retry_after_form": "http-date",
                },
            }
        ]
    }
    installed = await control.post("/faults", json=plan)
    limited = await accurate.get("/item/list.do")
    described = (await control.get("/faults")).json()
    assert installed.json() == {"installed": 1}
    assert limited.status_code == 429
    assert "GMT" in limited.headers["Retry-After"]
    assert described["rules"][0]["applied"] == 1


@pytest.mark.parametrize(
    ("kind", "status", "body"),
    [
        ("revoked_token", 401, {"s": False, "d": ["Invalid or Revoked API Token"]}),
        ("session_expired", 401, {"s": False, "d": ["Data Session Key tidak tepat"]}),
        ("oauth_token_expired", 401, {"error": "invalid_token"}),
    ],
)
async def test_auth_faults(
    sim: Simulator, accurate: httpx.AsyncClient, kind: str, status: int, body: object
) -> None:
    """Auth failures can be injected without touching the credentials."""
    sim.install_faults(_once(FaultAction(kind), count=1))  # type: ignore[arg-type]
    response = await accurate.get("/item/list.do")
    assert (response.status_code, response.json()) == (status, body)
    assert (await accurate.get("/item/list.do")).status_code == 200


async def test_accurate_errors_at_http_200(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """A retryable and a permanent `s:false`, both at HTTP 200."""
    sim.install_faults(
        FaultPlan(
            [
                FaultRule(FaultAction("accurate_error"), endpoint="*/item/*", count=1),
                FaultRule(
                    FaultAction("accurate_error", text="Barang & Jasa tidak tepat"),
                    endpoint="*/warehouse/*",
                ),
            ]
        )
    )
    busy = await accurate.get("/item/list.do")
    invalid = await accurate.get("/warehouse/list.do")
    assert busy.json() == {"s": False, "d": ["Terlalu banyak permintaan"]}
    assert invalid.json() == {"s": False, "d": ["Barang & Jasa tidak tepat"]}
    assert busy.status_code == invalid.status_code == 200


async def test_redirect_to_other_host(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """The 308 fault moves the database to the other data host and points
    there, path and query kept; the old host goes on answering 308."""
    sim.install_faults(_once(FaultAction("redirect_other_host"), count=1))
    response = await accurate.get("/item/list.do?fields=id,no")
    again = await accurate.get("/item/list.do?fields=id,no")
    target = sim.accurate_data_urls[1] + "/accurate/api/item/list.do?fields=id,no"
    assert response.status_code == again.status_code == 308
    assert response.headers["Location"] == target
    assert sim.accurate.current_host == 1
    assert {e.listener for e in sim.requests.entries()} == {"accurate-data-1"}


async def test_transport_faults(sim: Simulator, accurate: httpx.AsyncClient) -> None:
    """Reset, truncated body, no answer, delay and HTML all reach the client
    as the failures they imitate."""
    plan = FaultPlan(
        [
            FaultRule(FaultAction("reset"), count=1),
            FaultRule(FaultAction("truncate"), after=1, count=1),
            FaultRule(FaultAction("hang"), after=2, count=1),
            FaultRule(FaultAction("non_json", status=502), after=3, count=1),
            FaultRule(FaultAction("delay", seconds=0.3), after=4, count=1),
        ]
    )
    sim.install_faults(plan)
    with pytest.raises(httpx.TransportError):
        await accurate.get("/item/list.do")
    with pytest.raises(httpx.RemoteProtocolError):
        await accurate.get("/item/list.do")
    with pytest.raises(httpx.ReadTimeout):
        await accurate.get("/item/list.do", timeout=0.3)
    html = await accurate.get("/item/list.do")
    started = time.monotonic()
    delayed = await accurate.get("/item/list.do")
    assert html.status_code == 502
    assert html.headers["Content-Type"].startswith("text/html")
    assert delayed.status_code == 200
    assert time.monotonic() - started >= 0.3


async def test_forstok_faults(sim: Simulator, forstok: Forstok) -> None:
    """A rejected SKU fails its row only; an expired token fails the call."""
    token = await forstok.token()
    sim.install_faults(
        FaultPlan(
            [
                FaultRule(
                    FaultAction("reject_sku", sku="BAD-07", message="variant locked"),
                    service="forstok",
                    method="PATCH",
                ),
                FaultRule(
                    FaultAction("forstok_token_expired"), service="forstok", after=1
                ),
            ]
        )
    )
    rows = [
        {"sku": "OK-1", "warehouse_id": 1, "quantity": 3},
        {"sku": "BAD-07", "warehouse_id": 1, "quantity": 3},
    ]
    partial = await forstok.push(rows, token)
    expired = await forstok.push(rows, token)
    assert partial.json()["errors"] == [
        {"sku": "BAD-07", "warehouse_id": 1, "message": "variant locked"}
    ]
    assert expired.status_code == 401
    assert sim.forstok.on_hand_snapshot() == {("OK-1", 1): 3}


def test_plan_rejects_unknown_actions_and_fields() -> None:
    """A typo in a plan fails loudly instead of silently doing nothing."""
    with pytest.raises(ValueError, match="unknown fault action"):
        FaultPlan.from_json({"rules": [{"action": "explode"}]})
    with pytest.raises(ValueError, match="unknown rule fields"):
        FaultPlan.from_json({"rules": [{"action": "reset", "cuont": 1}]})


def test_time_window_and_after_count_together() -> None:
    """from_s/until_s bound the rule in time; `after` still counts every
    match, inside the window or not."""
    rule = FaultRule(FaultAction("reset"), from_s=1.0, until_s=2.0, after=1)
    taken = [rule.take(elapsed) for elapsed in (0.5, 1.2, 1.5, 2.5)]
    assert taken == [False, True, True, False]
    assert (rule.matched, rule.applied) == (4, 2)
