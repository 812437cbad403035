"""Deletions and stock moved by kinds a document feed cannot show (C10, C11).

A deleted document leaves nothing to list; quantities are always absolute
stock read from Accurate, so its effect disappears from Forstok once its pairs
are read again: at the next poll while the document was still inside the
lookback, at the next full sync at the latest.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import mismatches
from sync_cases import case_config, engine_for, on_hand, sell, settle

from daemon.simulator.accurate import LineSpec
from daemon.simulator.app import Simulator
from daemon.simulator.config import SimConfig

ONLY_GDG_1 = {"GDG-1": 1}


@pytest.fixture
def sim_config() -> SimConfig:
    return case_config({"A": 10, "D": {"GDG-1": 20}, "Z": 10})


async def test_c10_deleted_invoice_is_undone_by_the_next_full_sync(
    sim: Simulator, tmp_path: Path
) -> None:
    """SI-20 took 5 of A and was deleted after the cursor left it behind; no
    list shows it again, and the next full sync brings Forstok back to 10."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        doc = sell(sim, "SI-20", "A", 5, "01/02/2026 10:00:00")
        await h.engine.poll()
        assert on_hand(sim, "A") == 5
        sell(sim, "SI-21", "Z", 1, "01/02/2026 10:10:00")
        await h.engine.poll()

        sim.accurate.delete_document("sales-invoice", doc.id)
        await h.engine.full_sync("test")

        assert on_hand(sim, "A") == 10
        assert mismatches(sim) == {}


async def test_deleted_document_inside_the_lookback_is_undone_by_the_next_poll(
    sim: Simulator, tmp_path: Path
) -> None:
    """A known document that the lookback window should list but does not was
    deleted: its pairs are read again at once, without waiting for a full
    sync."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        doc = sell(sim, "SI-20", "A", 5, "01/02/2026 10:00:00")
        await h.engine.poll()

        sim.accurate.delete_document("sales-invoice", doc.id)
        await h.engine.poll()

        assert on_hand(sim, "A") == 10
        assert await h.engine.state.documents("sales_invoice") == {}


async def test_deleted_transfer_is_undone_in_both_warehouses(
    sim: Simulator, tmp_path: Path
) -> None:
    """A deleted transfer's two ends both return, at the next full sync."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        doc = sim.accurate.create_document(
            "item-transfer",
            [LineSpec("D", 5)],
            warehouse="GDG-1",
            reference_warehouse="GDG-2",
            last_update="01/02/2026 11:00:00",
        )
        await h.engine.poll()
        assert (on_hand(sim, "D", 1), on_hand(sim, "D", 2)) == (15, 5)

        sim.accurate.delete_document("item-transfer", doc.id)
        await h.engine.full_sync("test")

        assert (on_hand(sim, "D", 1), on_hand(sim, "D", 2)) == (20, 0)


async def test_c11_transfer_out_of_the_only_mapped_warehouse(
    sim: Simulator, tmp_path: Path
) -> None:
    """Only GDG-1 is mapped; a transfer of 5 D to unmapped GDG-2, with no
    invoice involved, sets Forstok D to 15 at the next poll."""
    async with engine_for(sim, tmp_path, warehouses=ONLY_GDG_1) as h:
        await settle(h)
        sim.accurate.create_document(
            "item-transfer",
            [LineSpec("D", 5)],
            warehouse="GDG-1",
            reference_warehouse="GDG-2",
            last_update="01/02/2026 11:00:00",
        )
        await h.engine.poll()

        assert on_hand(sim, "D") == 15
        assert mismatches(sim, ONLY_GDG_1) == {}
