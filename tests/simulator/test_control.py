"""The control API under /_sim/ (not part of either service)."""

from __future__ import annotations

from decimal import Decimal

import httpx

from daemon.simulator import Simulator
from simulator.simhttp import Forstok


async def test_document_lifecycle_over_http(
    sim: Simulator, control: httpx.AsyncClient, accurate: httpx.AsyncClient
) -> None:
    """SI-1 at 01/02/2026 10:00:00, A@GDG-1 -1: created, edited, deleted."""
    created = await control.post(
        "/documents",
        json={
            "kind": "sales-invoice",
            "number": "SI-1",
            "lastUpdate": "01/02/2026 10:00:00",
            "lines": [{"item": "A", "warehouse": "GDG-1", "quantity": 1}],
        },
    )
    doc = created.json()
    listed = (
        await accurate.get("/sales-invoice/list.do?fields=number,lastUpdate")
    ).json()
    after_create = sim.accurate.stock_of("A", "GDG-1")
    edited = await control.patch(
        f"/documents/sales-invoice/{doc['id']}",
        json={"lines": [{"item": "A", "warehouse": "GDG-1", "quantity": 3}]},
    )
    after_edit = sim.accurate.stock_of("A", "GDG-1")
    deleted = await control.delete(f"/documents/sales-invoice/{doc['id']}")
    assert listed["d"] == [{"number": "SI-1", "lastUpdate": "01/02/2026 10:00:00"}]
    assert (after_create, after_edit) == (Decimal(9), Decimal(7))
    assert edited.json()["optLock"] == 1
    assert deleted.json()["number"] == "SI-1"
    assert sim.accurate.stock_of("A", "GDG-1") == 10


async def test_signed_item_adjustment_and_stock_shortcut(
    sim: Simulator, control: httpx.AsyncClient
) -> None:
    """A negative item-adjustment line means ADJUSTMENT_OUT; /stock adjusts
    a pair to an absolute figure with a real document."""
    await control.post(
        "/documents",
        json={
            "kind": "item-adjustment",
            "lines": [{"item": "B", "warehouse": "GDG-1", "quantity": -2}],
        },
    )
    adjusted = await control.post(
        "/stock", json={"item": "C", "warehouse": "GDG-2", "quantity": "4.5"}
    )
    assert sim.accurate.stock_of("B", "GDG-1") == 4
    assert sim.accurate.stock_of("C", "GDG-2") == Decimal("4.5")
    line = adjusted.json()["document"]["detailItem"][0]
    assert line["itemAdjustmentType"] == "ADJUSTMENT_IN"


async def test_state_history_and_requests(
    sim: Simulator, control: httpx.AsyncClient, forstok: Forstok
) -> None:
    """State shows both sides; history lists pushes; the log summarises."""
    await forstok.push([{"sku": "A", "warehouse_id": 1, "quantity": 10}])
    await control.post(
        "/forstok/reserved", json={"sku": "A", "warehouse_id": 1, "reserved": 2}
    )
    state = (await control.get("/state")).json()
    history = (await control.get("/history")).json()
    summary = (await control.get("/requests")).json()
    await control.post("/reset-log")
    assert {"item": "A", "warehouse": "GDG-1", "quantity": 10} in state["accurate"][
        "stock"
    ]
    assert state["forstok"]["stock"] == [
        {"sku": "A", "warehouse_id": 1, "on_hand": 10, "reserved": 2, "available": 8}
    ]
    assert [(h["sku"], h["new"]) for h in history] == [("A", 10)]
    assert summary["total"] == 2
    assert sim.requests.entries() == []


async def test_business_switches_and_credentials(
    sim: Simulator, control: httpx.AsyncClient
) -> None:
    """Business steps run; switches change config; bad input is a 400."""
    every = (await control.post("/business", json={"every_kind": True})).json()
    steps = (await control.post("/business", json={"steps": 5})).json()
    switched = await control.post(
        "/switches", json={"forstok": {"mode": "silent_drop"}}
    )
    unknown = await control.post("/switches", json={"accurate": {"nope": 1}})
    moved = await control.post("/move-database", json={"host": 1})
    await control.post("/revoke", json={"revoked": True})
    missing = await control.get("/nothing")
    assert len(every["actions"]) == 17
    assert len(steps["actions"]) == 5
    assert switched.status_code == 200
    assert sim.config.forstok.mode == "silent_drop"
    assert unknown.status_code == 400
    assert moved.json()["host"] == sim.accurate_data_urls[1]
    assert sim.accurate_auth.api_token_revoked
    assert missing.status_code == 404


async def test_control_calls_are_not_logged(
    sim: Simulator, control: httpx.AsyncClient
) -> None:
    """/_sim/ traffic is neither service's, so the request log ignores it."""
    await control.get("/state")
    assert sim.requests.entries() == []
