"""C08 against the simulator's `odd_last_update` switch, end to end.

Accurate documents `lastUpdate` as `dd/MM/yyyy HH:mm:ss` (accurate-api.md
§5); a row in any other form must hold its kind's cursor, be logged, and be
read all the same, while other kinds carry on. Unlike the canned list body of
test_cursors.py, the simulator here keeps serving real filters, paging and
details, so the daemon's later polls see what Accurate would show.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from harness import Harness, mismatches
from sync_cases import case_config, cursor_of, engine_for, on_hand, sell, settle

from daemon.simulator.accurate import LineSpec
from daemon.simulator.app import Simulator
from daemon.simulator.config import SimConfig

ODD = {"sales-invoice/SI-9": "%Y-%m-%d %H:%M"}
"""SI-9's `lastUpdate` as an ISO-like text without seconds (C08's input)."""


@pytest.fixture
def sim_config() -> SimConfig:
    return case_config({"A": 10, "B": 6, "C": 10})


async def poll_logged(h: Harness) -> list[MutableMapping[str, Any]]:
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as events:
        await h.engine.poll()
    return [e for e in events if e["event"] == "last_update_unparsable"]


async def test_c08_odd_stamp_holds_its_kind_until_it_parses_again(
    sim: Simulator, tmp_path: Path
) -> None:
    """SI-9 is listed as `2026-02-01 10:10`: the sales-invoice cursor stays,
    one error names kind, document and value, SI-9's stock is pushed, and
    the delivery order's kind moves on. An edit made while the value is odd
    is still synced; once the value is valid, the cursor reaches it."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-1", "A", 1, "01/02/2026 10:00:00")
        await h.engine.poll()
        sim.config.accurate.odd_last_update = dict(ODD)
        odd = sell(sim, "SI-9", "B", 2, "01/02/2026 10:10:00")
        sim.accurate.create_document(
            "delivery-order",
            [LineSpec("C", 3, "GDG-1")],
            number="DO-1",
            last_update="01/02/2026 10:20:00",
        )

        (error,) = await poll_logged(h)
        assert error["log_level"] == "error"
        assert error["kind"] == "sales_invoice"
        assert (error["document"], error["value"]) == ("SI-9", "2026-02-01 10:10")
        assert await cursor_of(h) == "01/02/2026 10:00:00"
        assert await cursor_of(h, "delivery_order") == "01/02/2026 10:20:00"
        assert (on_hand(sim, "B"), on_hand(sim, "C")) == (4, 7)

        sim.accurate.edit_document(
            "sales-invoice",
            odd.id,
            lines=[LineSpec("B", 5, "GDG-1")],
            last_update="01/02/2026 10:30:00",
        )
        assert len(await poll_logged(h)) == 1
        assert await cursor_of(h) == "01/02/2026 10:00:00"
        assert on_hand(sim, "B") == 1

        sim.config.accurate.odd_last_update = {}
        assert await poll_logged(h) == []
        assert await cursor_of(h) == "01/02/2026 10:30:00"
        assert mismatches(sim) == {}
