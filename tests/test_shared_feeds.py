"""A Forstok warehouse fed by several Accurate warehouses gets whole sums.

A full sync used to queue each stock-list page's pushes as it came. Where
two Accurate warehouses feed one Forstok warehouse, the sum was then taken
over whatever readings the state held: on a first run only the warehouses
already read (GDG-1's 10 before GDG-2's -4 came in), later this run's
reading of one beside the last run's of the other (a transfer between them
counted twice). Forstok was offered numbers Accurate never held.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from harness import Harness, mismatches
from sync_cases import case_config, engine_for, pushes_of, wait_for

from daemon.simulator.accurate import LineSpec
from daemon.simulator.app import Simulator
from daemon.simulator.config import SimConfig

FEED = {"GDG-1": 1, "GDG-2": 1}
ITEMS = [f"I-{n:02d}" for n in range(45)]  # more than two Forstok batches


@pytest.fixture
def sim_config() -> SimConfig:
    # Each holds 10 in GDG-1 and -4 in GDG-2 (sold before its receipt was
    # entered): Forstok must be offered 6.
    return case_config({no: {"GDG-1": 10, "GDG-2": -4} for no in ITEMS})


def pushes(sim: Simulator) -> dict[str, list[int]]:
    return {no: pushes_of(sim, no) for no in ITEMS}


async def full_sync_held_at_gdg_2(sim: Simulator, h: Harness) -> None:
    """A full sync whose GDG-2 stock list waits while its own pusher, which
    sends what is queued as GDG-1 is read, goes round a few times."""
    gdg_2 = str(sim.accurate.warehouse_by_name("GDG-2").id)
    held = sim.when_request(
        "accurate", "*/item/list-stock.do", params={"warehouseId": gdg_2}
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(h.engine.full_sync, "test")
        await wait_for(held)
        await anyio.sleep(1.0)
        held.release()


async def test_a_first_full_sync_never_pushes_one_warehouse_alone(
    sim: Simulator, tmp_path: Path
) -> None:
    async with engine_for(sim, tmp_path, warehouses=FEED) as h:
        await full_sync_held_at_gdg_2(sim, h)

        assert pushes(sim) == {no: [6] for no in ITEMS}
        assert mismatches(sim, FEED) == {}


async def test_a_transfer_between_the_warehouses_pushes_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    """Settled, then 5 of each item moves from GDG-1 to GDG-2: the sum stays
    6, and only a full sync sees it. Forstok must never be offered 1 or 11."""
    async with engine_for(sim, tmp_path, warehouses=FEED) as h:
        await h.engine.full_sync("first")
        assert pushes(sim) == {no: [6] for no in ITEMS}

        sim.accurate.create_document(
            "item-transfer",
            [LineSpec(no, 5) for no in ITEMS],
            warehouse="GDG-1",
            reference_warehouse="GDG-2",
        )
        await full_sync_held_at_gdg_2(sim, h)

        assert pushes(sim) == {no: [6] for no in ITEMS}
        assert mismatches(sim, FEED) == {}
