"""Items deleted, created again under the same number, or renamed.

Merchants delete a wrongly entered item and enter it again, or edit an
item's number. Before, the state kept every item it had ever seen: the old
and the new item of one number were a conflict for good (neither pushed,
and the documented exclude override could not tell them apart), and the
old SKU of a renamed item kept its last quantity in Forstok without a word.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from harness import mismatches
from sync_cases import case_config, engine_for, on_hand, pushes_of, sell, settle

from daemon.simulator.app import Simulator
from daemon.simulator.config import SimConfig


@pytest.fixture
def sim_config() -> SimConfig:
    return case_config({"A": 10, "B": 4})


def enter_again(sim: Simulator, no: str, quantity: int) -> None:
    sim.accurate.delete_item(no)
    sim.accurate.add_item(no)  # a new id, the same number
    sim.accurate.set_opening_balance(no, "GDG-1", quantity)


async def test_an_item_entered_again_under_its_number_is_pushed_by_the_poll(
    sim: Simulator, tmp_path: Path
) -> None:
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        enter_again(sim, "A", 25)

        with structlog.testing.capture_logs() as logs:
            await h.engine.poll()

        assert on_hand(sim, "A") == 25
        assert not [e for e in logs if e["event"] == "mapping_conflict"]
        deleted = [e for e in logs if e["event"] == "items_deleted"]
        assert [e["items"] for e in deleted] == [["A"]]
        assert mismatches(sim) == {}


async def test_an_item_entered_again_while_stopped_is_settled_by_the_full_sync(
    sim: Simulator, tmp_path: Path
) -> None:
    """No poll saw it happen (the daemon was down past the lookback): the
    full sync's item list misses the old id, and Accurate confirms it gone."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
    enter_again(sim, "A", 25)

    async with engine_for(sim, tmp_path) as h:
        await h.engine.full_sync("test")
        await h.engine.poll()

        assert on_hand(sim, "A") == 25
        assert not h.engine.mapping.problems_of("conflict")
        assert mismatches(sim) == {}


async def test_a_renamed_item_is_pushed_under_its_new_sku_and_the_old_named(
    sim: Simulator, tmp_path: Path
) -> None:
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sim.accurate.rename_item("A", "A2")

        with structlog.testing.capture_logs() as logs:
            await h.engine.poll()
            sell(sim, "SI-1", "A2", 3, None)
            await h.engine.poll()
            await h.engine.full_sync("test")

        assert on_hand(sim, "A2") == 7
        assert pushes_of(sim, "A") == [10], "nothing is pushed to the old SKU"
        dropped = {
            (e["sku"], e["forstok_warehouse"], e["last_pushed"], e["now_synced_as"])
            for e in logs
            if e["event"] == "sku_no_longer_synced"
        }
        assert dropped == {("A", 1, 10, "A2"), ("A", 2, 0, "A2")}
        stale = [e for e in logs if e["event"] == "stale_skus_in_forstok"]
        assert [e["skus"] for e in stale] == [["A@1=10", "A@2=0"]]


async def test_a_deleted_item_is_forgotten_and_its_sku_named_at_each_full_sync(
    sim: Simulator, tmp_path: Path
) -> None:
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sim.accurate.set_opening_balance("B", "GDG-1", 0)
        await h.engine.poll()
        sim.accurate.delete_item("B")

        with structlog.testing.capture_logs() as logs:
            await h.engine.full_sync("test")

        assert "B" not in {item.no for item in await h.engine.state.items()}
        stale = [e for e in logs if e["event"] == "stale_skus_in_forstok"]
        assert [e["skus"] for e in stale] == [["B@1=0", "B@2=0"]]


async def test_an_excluded_item_is_not_taken_for_a_stale_sku(
    sim: Simulator, tmp_path: Path
) -> None:
    from daemon.mapping import Override

    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        await h.engine.state.replace_overrides([Override("A", excluded=True)])
        await h.engine.reload_mapping()

        with structlog.testing.capture_logs() as logs:
            await h.engine.full_sync("test")

        assert not [e for e in logs if e["event"] == "stale_skus_in_forstok"]


async def test_every_conflict_inside_a_forstok_export_is_logged(
    sim: Simulator, tmp_path: Path
) -> None:
    """They involve no Accurate item, so they were all logged under one key:
    only the first ever showed."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        export = ["A", "a", "B", "b ", "OK"]
        await h.engine.state.replace_forstok_skus(export, "export.csv")

        with structlog.testing.capture_logs() as logs:
            await h.engine.poll()

        logged = [e["detail"] for e in logs if e["event"] == "mapping_conflict"]
        assert len(logged) == 2, logged
