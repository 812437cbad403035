"""An older reading that arrives late never overwrites a newer one in Forstok.

The simulator answers one item's stock read when it arrives but holds the
answer back (`when_request(..., stage="answer")`), as a slow network or a
stalled proxy would. Meanwhile the stock changes and a newer reading of the
same pair is taken and pushed. The held answer then arrives: it carries the
older quantity, and must not reach Forstok after the newer one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from harness import Harness, mismatches
from sync_cases import (
    case_config,
    engine_for,
    eventually,
    on_hand,
    pushes_of,
    sell,
    settle,
    wait_for,
)

from daemon.simulator.app import Simulator
from daemon.simulator.config import SimConfig
from daemon.simulator.faults import FaultAction, FaultPlan, FaultRule
from daemon.timefmt import iso_utc


@pytest.fixture
def sim_config() -> SimConfig:
    return case_config({"G01": {"GDG-1": 10, "GDG-2": 5}, "G02": 4})


async def push_until(h: Harness, condition: Callable[[], bool]) -> None:
    """Push as the daemon's push task does, on its own, until `condition`
    holds: the full sync's own push waits behind the held refresh."""
    for _ in range(250):
        await h.engine.push()
        if condition():
            return
        await anyio.sleep(0.02)
    raise AssertionError("still false after 5 s")


async def test_an_older_reading_answered_late_is_never_pushed_after_a_newer_one(
    sim: Simulator, tmp_path: Path
) -> None:
    """A poll reads G01 (9) and its answer is held; a second sale takes G01
    to 7, a full sync reads 7 and the push task sends it. When the 9 finally
    arrives, Forstok keeps 7: its history never shows 9 after 7."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        g01 = str(sim.accurate.item_by_no("G01").id)
        late = sim.when_request(
            "accurate", "*/item/detail.do", params={"id": g01}, stage="answer"
        )
        sell(sim, "SI-1", "G01", 1, "01/02/2026 10:00:00")

        async with anyio.create_task_group() as tg:
            tg.start_soon(h.engine.poll)
            await wait_for(late)  # answered with 9, held on the way back
            sell(sim, "SI-2", "G01", 2, "01/02/2026 10:01:00")
            tg.start_soon(h.engine.full_sync, "test")
            await push_until(h, lambda: on_hand(sim, "G01") == 7)
            late.release()

        assert pushes_of(sim, "G01") == [10, 7]

        await h.engine.poll()  # SI-2 is polled: 7 again, nothing to send
        assert pushes_of(sim, "G01") == [10, 7]
        assert mismatches(sim) == {}


async def test_a_stock_list_answered_late_is_never_pushed_after_a_newer_reading(
    sim: Simulator, tmp_path: Path
) -> None:
    """A full sync's GDG-1 stock list is answered (G01 = 10) but held; a sale
    takes G01 to 9, which a poll reads and pushes. When the list arrives,
    its 10 is older than the 9 and is not sent."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        gdg_1 = str(sim.accurate.warehouse_by_name("GDG-1").id)
        late = sim.when_request(
            "accurate",
            "*/item/list-stock.do",
            params={"warehouseId": gdg_1},
            stage="answer",
        )

        async with anyio.create_task_group() as tg:
            tg.start_soon(h.engine.full_sync, "test")
            await wait_for(late)  # answered with 10, held on the way back
            sell(sim, "SI-1", "G01", 1, "01/02/2026 10:00:00")
            await h.engine.poll()
            # The full sync's pusher may be busy as the poll ends; it takes
            # the poll's rows over and sends them.
            await eventually(lambda: on_hand(sim, "G01") == 9)
            late.release()

        assert pushes_of(sim, "G01") == [10, 9]
        assert mismatches(sim) == {}


async def test_a_retried_stock_page_is_dated_by_its_last_attempt(
    sim: Simulator, tmp_path: Path
) -> None:
    """A full sync's page is refused (503), and that answer is held while a
    poll reads and pushes G01 (9) and a back-dated sale that no poll can see
    takes it to 7. The page is then sent again, after the 9 was read, and
    shows 7: dated by its first try it would lose to the 9, and Forstok would
    keep 9 until the next full sync."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        gdg_1 = {"warehouseId": str(sim.accurate.warehouse_by_name("GDG-1").id)}
        page = "*/item/list-stock.do"
        refused = FaultAction("status", status=503)
        rule = FaultRule(refused, "accurate", page, count=1, params=gdg_1)
        sim.install_faults(FaultPlan([rule]))
        # Held on the way back, so that the retry cannot leave before the
        # poll's read, however slow the machine.
        first = sim.when_request("accurate", page, params=gdg_1, stage="answer")

        async with anyio.create_task_group() as tg:
            tg.start_soon(h.engine.full_sync, "test")
            await wait_for(first)
            sell(sim, "SI-1", "G01", 1, "01/02/2026 10:00:00")
            await h.engine.poll()
            await eventually(lambda: on_hand(sim, "G01") == 9)
            sell(sim, "SI-2", "G01", 2, "01/01/2025 10:00:00")
            first.release()

        assert pushes_of(sim, "G01") == [10, 9, 7]
        assert mismatches(sim) == {}


async def test_readings_stored_by_a_clock_that_ran_ahead_do_not_block_new_ones(
    sim: Simulator, tmp_path: Path
) -> None:
    """The host clock ran 3 h ahead, so the state holds readings and pushes
    dated 3 h into the future, then NTP stepped it back and the daemon
    restarted. New readings must still win: before, each was dated before
    the stored one and dropped, and Forstok kept 9 through polls and full
    syncs until real time passed the future stamps."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-1", "G01", 1, "01/02/2026 10:00:00")
        await h.engine.poll()
        assert on_hand(sim, "G01") == 9
    ahead = iso_utc(datetime.now(UTC) + timedelta(hours=3))
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        db.execute("UPDATE reading SET read_at = ?", (ahead,))
        db.execute("UPDATE pushed SET read_at = ?", (ahead,))
    db.close()

    async with engine_for(sim, tmp_path) as h:
        sell(sim, "SI-2", "G01", 2, "01/02/2026 10:05:00")
        await h.engine.poll()
        assert on_hand(sim, "G01") == 7

        await h.engine.full_sync("test")
        assert pushes_of(sim, "G01") == [10, 9, 7]
        assert mismatches(sim) == {}
