"""One item whose stock cannot be read holds up no other item.

Years of a merchant's data hold odd values. The simulator's
`odd_item_balance` switch shows a raw value instead of one warehouse's
balance in an item's detail. Before, the read of that item raised, the whole
batch of pairs failed with it, and since the queue is read oldest first the
same item headed every later batch: no poll pushed anything until the next
full sync.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from harness import mismatches
from sync_cases import case_config, engine_for, on_hand, pushes_of, sell, settle

from daemon.simulator.app import Simulator
from daemon.simulator.config import SimConfig

ONLY_GDG_1 = {"GDG-1": 1}


@pytest.fixture
def sim_config() -> SimConfig:
    return case_config({"BAD": {"GDG-1": 10, "GDG-2": 3}, "A": 10, "B": 10})


async def test_an_odd_line_of_an_unmapped_warehouse_is_ignored(
    sim: Simulator, tmp_path: Path
) -> None:
    async with engine_for(sim, tmp_path, warehouses=ONLY_GDG_1) as h:
        await settle(h)
        sim.config.accurate.odd_item_balance["BAD/GDG-2"] = None

        sell(sim, "SI-1", "BAD", 1, "01/02/2026 10:00:00")
        await h.engine.poll()

        assert pushes_of(sim, "BAD") == [10, 9]
        assert mismatches(sim, ONLY_GDG_1) == {}


@pytest.mark.parametrize("odd", [None, "n/a", {"value": 1}])
async def test_an_unreadable_item_is_reported_and_the_others_go_on(
    sim: Simulator, tmp_path: Path, odd: object
) -> None:
    async with engine_for(sim, tmp_path, warehouses=ONLY_GDG_1) as h:
        await settle(h)
        sim.config.accurate.odd_item_balance["BAD/GDG-1"] = odd

        with structlog.testing.capture_logs() as logs:
            sell(sim, "SI-1", "BAD", 1, "01/02/2026 10:00:00")
            sell(sim, "SI-2", "A", 3, "01/02/2026 10:00:00")
            first = await h.engine.poll()
            sell(sim, "SI-3", "B", 4, "01/02/2026 10:01:00")
            await h.engine.poll()

        assert (on_hand(sim, "A"), on_hand(sim, "B")) == (7, 6)
        assert pushes_of(sim, "BAD") == [10], "a guessed number was pushed"
        assert first.errors == 0
        reported = [e for e in logs if e["event"] == "item_unreadable"]
        assert len(reported) == 1, reported
        assert reported[0]["sku"] == "BAD"
        assert "balance" in reported[0]["error"]
        assert "next full sync" in reported[0]["action"]
        assert not [
            e for e in logs if e["event"] in ("poll_failed", "poll_kind_failed")
        ]

        # Mended in Accurate: the next full sync reads it from the stock list.
        sim.config.accurate.odd_item_balance.clear()
        await h.engine.full_sync("test")
        assert pushes_of(sim, "BAD") == [10, 9]
        assert mismatches(sim, ONLY_GDG_1) == {}


async def test_a_full_sync_reads_around_an_unreadable_stock_list_row(
    sim: Simulator, tmp_path: Path
) -> None:
    """The same value in GDG-1's stock list failed the whole full sync, every
    night. The row is now read again through the item's detail and, that
    failing too, reported; it is never taken as absent (which would push a
    zero), and every other item is synced."""
    async with engine_for(sim, tmp_path, warehouses=ONLY_GDG_1) as h:
        await settle(h)
        sell(sim, "SI-1", "BAD", 1, "01/01/2025 10:00:00")  # no poll sees these
        sell(sim, "SI-2", "A", 3, "01/01/2025 10:00:00")
        sim.config.accurate.odd_item_balance["BAD/GDG-1"] = "n/a"

        with structlog.testing.capture_logs() as logs:
            counts = await h.engine.full_sync("test")

        assert counts.errors == 0
        assert on_hand(sim, "A") == 7
        assert pushes_of(sim, "BAD") == [10], "a guessed number was pushed"
        reported = [e for e in logs if e["event"] == "item_unreadable"]
        assert [e["sku"] for e in reported] == ["BAD"]

        sim.config.accurate.odd_item_balance.clear()
        await h.engine.full_sync("test")
        assert pushes_of(sim, "BAD") == [10, 9]
        assert mismatches(sim, ONLY_GDG_1) == {}
