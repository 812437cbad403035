"""What reaches Forstok: monotonic readings, the quantity rule, partial failure.

Every reading is stamped with the moment its Accurate answer arrived and that
stamp is kept in the state file; Forstok is never sent a value read earlier
than the one it last accepted (cases C16 and C19 and the monotonic rule).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
import structlog
from harness import mismatches, write_config
from sync_cases import (
    case_config,
    engine_for,
    eventually,
    forstok_requests,
    on_hand,
    pushes_of,
    sell,
    settle,
    state_rows,
    wait_for,
    while_held,
)

from daemon.cli import main
from daemon.simulator.accurate import LineSpec
from daemon.simulator.app import Simulator
from daemon.simulator.config import SimConfig
from daemon.simulator.faults import FaultAction, FaultPlan, FaultRule
from daemon.sync import Engine

ONLY_GDG_1 = {"GDG-1": 1}
BOTH_INTO_WH_1 = {"GDG-1": 1, "GDG-2": 1}


@pytest.fixture
def sim_config() -> SimConfig:
    stock = {f"G{n:02d}": {"GDG-1": 10, "GDG-2": 5} for n in range(1, 8)}
    return case_config({"N": 0, **stock, "F": {"GDG-2": 5}, "BAD-07": 10})


def receive(
    sim: Simulator, item: str, quantity: float, unit: str | None = None, ratio: int = 1
) -> None:
    sim.accurate.create_document(
        "receive-item", [LineSpec(item, quantity, "GDG-1", unit, ratio)]
    )


# -- monotonic readings ----------------------------------------------------------


async def test_reading_times_are_persisted_as_utc_arrival_times(
    sim: Simulator, tmp_path: Path
) -> None:
    """Each stored reading and each accepted push carries the UTC moment its
    Accurate answer arrived, within the run that read it."""
    before = datetime.now(UTC)
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-1", "G01", 1, "01/02/2026 10:00:00")
        await h.engine.poll()
    after = datetime.now(UTC)

    path = tmp_path / "state.sqlite3"
    stamps = [row[0] for row in state_rows(path, "SELECT read_at FROM reading")]
    stamps += [row[0] for row in state_rows(path, "SELECT read_at FROM pushed")]
    assert stamps
    for stamp in stamps:
        moment = datetime.fromisoformat(stamp)
        assert moment.utcoffset() is not None
        assert moment.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert before <= moment <= after


async def test_slow_refresh_never_overwrites_a_newer_full_sync_reading(
    sim: Simulator, tmp_path: Path
) -> None:
    """A refresh reads one item, then waits on another; meanwhile a sale and a
    full sync read newer values. The refresh's early answer is older than the
    full sync's, so it never replaces it, in the state or in Forstok."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-1", "G01", 1, "01/02/2026 10:00:00")
        sell(sim, "SI-2", "G02", 1, "01/02/2026 10:00:00")
        second_read = sim.when_request("accurate", "*/item/detail.do", nth=2)

        async with anyio.create_task_group() as tg:
            tg.start_soon(h.engine.poll)
            await wait_for(second_read)
            await anyio.sleep(0.2)  # the first answer has arrived by now
            sim.accurate.create_document(
                "sales-invoice",
                [LineSpec("G01", 2, "GDG-1"), LineSpec("G02", 2, "GDG-1")],
                last_update="01/02/2026 10:01:00",
            )
            tg.start_soon(h.engine.full_sync, "test")
            await eventually(lambda: stored(sim, tmp_path, ["G01", "G02"]) == [7, 7])
            second_read.release()

        assert stored(sim, tmp_path, ["G01", "G02"]) == [7, 7]
        assert pushes_of(sim, "G01")[-1] == 7
        assert pushes_of(sim, "G02")[-1] == 7
        assert mismatches(sim) == {}


def stored(sim: Simulator, tmp_path: Path, items: list[str]) -> list[int | None]:
    """The readings of items in GDG-1 that the state file holds."""
    warehouse = sim.accurate.warehouse_by_name("GDG-1").id
    found = []
    for no in items:
        rows = state_rows(
            tmp_path / "state.sqlite3",
            "SELECT quantity FROM reading WHERE item_id = ? AND warehouse_id = ?",
            (sim.accurate.item_by_no(no).id, warehouse),
        )
        found.append(int(float(rows[0][0])) if rows else None)
    return found


async def test_full_sync_zero_for_an_absent_item_is_as_old_as_its_listing(
    sim: Simulator, tmp_path: Path
) -> None:
    """An item missing from the stock list gets a zero reading dated when the
    list was read, so stock it gains during the full sync, read and pushed by a
    poll, is not overwritten by that zero."""
    async with engine_for(sim, tmp_path) as h:
        page_two = sim.when_request("accurate", "*/item/list-stock.do", nth=2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(h.engine.full_sync, "test")
            await wait_for(page_two)
            receive(sim, "N", 5)
            await h.engine.poll()
            await eventually(lambda: on_hand(sim, "N") == 5)
            page_two.release()

        assert pushes_of(sim, "N") == [5]
        assert mismatches(sim) == {}


async def test_full_sync_confirms_absences_from_a_list_that_shrank(
    tmp_path: Path,
) -> None:
    """A stock list loses rows while it is paged, so stocked items slide onto
    a page already read; they are read again, not taken as zero."""
    config = case_config({**{f"U{n}": 0 for n in range(1, 6)}, "X": 5, "Y": 4})
    config.accurate.list_stock_omits_untouched = False
    sim = Simulator(config)
    sim.start_in_thread()
    try:
        async with engine_for(sim, tmp_path, warehouses=ONLY_GDG_1) as h:
            page_two = sim.when_request("accurate", "*/item/list-stock.do", nth=2)

            def untouched_items_leave_the_list() -> None:
                sim.config.accurate.list_stock_omits_untouched = True

            await while_held(
                page_two, h.engine.full_sync("test"), untouched_items_leave_the_list
            )

        assert (on_hand(sim, "X"), on_hand(sim, "Y")) == (5, 4)
        assert pushes_of(sim, "X") == [5]
    finally:
        sim.stop()


async def test_full_sync_that_read_before_an_incremental_push_keeps_it(
    sim: Simulator, tmp_path: Path
) -> None:
    """A full sync reads a pair, then a sale is polled and pushed before the
    full sync's turn to push: the older full-sync value is never sent after
    the newer one."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        page_two = sim.when_request("accurate", "*/item/list-stock.do", nth=2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(h.engine.full_sync, "test")
            await wait_for(page_two)
            sell(sim, "SI-1", "G01", 3, "01/02/2026 10:00:00")
            await h.engine.poll()
            await eventually(lambda: on_hand(sim, "G01") == 7)
            page_two.release()

        assert pushes_of(sim, "G01") == [10, 7]
        assert mismatches(sim) == {}


async def test_push_whose_answer_was_lost_is_not_taken_as_undone(
    sim: Simulator, tmp_path: Path
) -> None:
    """Forstok applies 9 but its answer never comes; when Accurate goes back
    to 10, the 10 is sent, because what Forstok holds is no longer known."""
    impatient = {"timeout": "300ms", "max_retries": 0}
    async with engine_for(sim, tmp_path, forstok=impatient) as h:
        await settle(h)
        doc = sell(sim, "SI-1", "G01", 1, "01/02/2026 10:00:00")
        sim.config.forstok.mode = "lost_response"
        await h.engine.poll()
        assert on_hand(sim, "G01") == 9
        sim.config.forstok.mode = "partial"

        sim.accurate.delete_document("sales-invoice", doc.id)
        await h.engine.poll()

        assert on_hand(sim, "G01") == 10
        assert mismatches(sim) == {}


# -- the quantity rule -----------------------------------------------------------


async def test_c16_warehouses_feeding_one_are_summed_then_clamped(
    sim: Simulator, tmp_path: Path
) -> None:
    """F is -3 in GDG-1 and 5 in GDG-2, both feeding WH-1: Forstok gets 2,
    and no negative number is ever sent."""
    async with engine_for(sim, tmp_path, warehouses=BOTH_INTO_WH_1) as h:
        await settle(h)
        sell(sim, "SI-1", "F", 3, "01/02/2026 10:00:00")
        await h.engine.poll()

        assert sim.accurate.stock_of("F", "GDG-1") == -3
        assert on_hand(sim, "F") == 2
        assert mismatches(sim, BOTH_INTO_WH_1) == {}
        assert all(p.new >= 0 for p in sim.forstok.history_of())


async def test_c16_negative_stock_alone_is_pushed_as_zero_with_a_warning(
    sim: Simulator, tmp_path: Path
) -> None:
    """With only GDG-1 mapped, F at -3 becomes 0, and a warning names the item
    and the warehouse."""
    async with engine_for(sim, tmp_path, warehouses=ONLY_GDG_1) as h:
        await settle(h)
        sell(sim, "SI-1", "F", 3, "01/02/2026 10:00:00")
        with structlog.testing.capture_logs() as events:
            await h.engine.poll()

        assert on_hand(sim, "F") == 0
        (warning,) = [e for e in events if e["event"] == "negative_stock"]
        assert warning["log_level"] == "warning"
        assert (warning["item"], warning["warehouse"]) == ("F", 1)

        # Not again at every full sync while it stays the same; again when
        # the amount changes.
        with structlog.testing.capture_logs() as events:
            await h.engine.full_sync("test")
            await h.engine.full_sync("test")
            sell(sim, "SI-2", "F", 2, "01/02/2026 10:01:00")
            await h.engine.poll()
        said = [e["quantity"] for e in events if e["event"] == "negative_stock"]
        assert [Decimal(q) for q in said] == [Decimal(-5)]


async def test_quantities_are_whole_base_units_rounded_down(
    sim: Simulator, tmp_path: Path
) -> None:
    """Half a unit received is not offered; a box of 12 counts as 12 units."""
    async with engine_for(sim, tmp_path, warehouses=ONLY_GDG_1) as h:
        await settle(h)
        receive(sim, "G03", 0.5)
        await h.engine.poll()
        assert on_hand(sim, "G03") == 10

        receive(sim, "G03", 1, "BOX", 12)
        await h.engine.poll()
        assert on_hand(sim, "G03") == 22
        assert mismatches(sim, ONLY_GDG_1) == {}


# -- partial failure (C19) ---------------------------------------------------------


def rejecting_bad_07() -> FaultPlan:
    action = FaultAction("reject_sku", sku="BAD-07", message="variant rejected")
    return FaultPlan([FaultRule(action, "forstok", "*/quantities.json")])


def failing_row(path: Path) -> tuple[int, int, str, str]:
    """(attempts, held, reason, retry_at) of BAD-07."""
    (row,) = state_rows(
        path,
        "SELECT attempts, held, reason, retry_at FROM failing WHERE sku = 'BAD-07'",
    )
    return row  # type: ignore[no-any-return]


def make_retries_due(path: Path) -> None:
    """Time passes: every backoff has run out."""
    state_rows(path, "UPDATE failing SET retry_at = '2000-01-01T00:00:00+00:00'")


async def reject_until_held(engine: Engine, path: Path, sim: Simulator) -> list[float]:
    """Let the backoff run out and push, until BAD-07 is held; the waits."""
    waits = []
    for _ in range(5):
        _, held, _, retry_at = failing_row(path)
        if held:
            break
        due_in = datetime.fromisoformat(retry_at) - datetime.now(UTC)
        waits.append(due_in.total_seconds())
        before = forstok_requests(sim)
        await engine.push()
        assert forstok_requests(sim) == before, "retried before its backoff ran out"
        make_retries_due(path)
        await engine.push()
    return waits


REFUSAL_SHAPES = {
    "partial": "variant rejected",
    "all_or_nothing": "HTTP 422: variant rejected",
    "multi_status": "HTTP 207: variant rejected",
    "multi_status_applied": "HTTP 207: variant rejected",
    "bare_error": "HTTP 200: update failed",
}
"""Each assumed way Forstok answers a batch with a bad row (forstok §3), and
the reason BAD-07 is then held with: Forstok's own words."""


@pytest.mark.parametrize("mode", sorted(REFUSAL_SHAPES))
async def test_c19_one_rejected_row_does_not_block_its_batch(
    sim: Simulator, tmp_path: Path, mode: str
) -> None:
    """In one batch of 20, BAD-07 is refused; the 19 others are applied and
    recorded as pushed, whether Forstok names the row (200, 207, 422) or
    only fails the request. Only BAD-07 is recorded as failing, with
    Forstok's message; no body goes out twice, and the next push sends
    nothing."""
    sim.config.forstok.mode = mode  # type: ignore[assignment]
    sim.install_faults(rejecting_bad_07())
    async with engine_for(sim, tmp_path, warehouses=ONLY_GDG_1) as h:
        await h.engine.full_sync("test")
        sent = forstok_requests(sim)
        await h.engine.push()
        assert forstok_requests(sim) == sent

    path = tmp_path / "state.sqlite3"
    assert on_hand(sim, "BAD-07") is None
    assert {
        k: v for k, v in mismatches(sim, ONLY_GDG_1).items() if k[0] != "BAD-07"
    } == {}
    pushed = {row[0] for row in state_rows(path, "SELECT sku FROM pushed")}
    assert len(pushed) == 9
    assert "BAD-07" not in pushed
    assert state_rows(path, "SELECT sku FROM failing") == [("BAD-07",)]
    attempts, held, reason, _ = failing_row(path)
    assert (attempts, held) == (1, 0)
    assert reason == REFUSAL_SHAPES[mode]
    assert sim.config.forstok.secret_key not in reason
    bodies = [e.body for e in sim.requests.entries("forstok") if e.method == "PATCH"]
    assert len(bodies) == len(set(bodies)), "a body was sent unchanged twice"
    applied = Counter((p.sku, p.warehouse_id) for p in sim.forstok.history_of())
    assert len(applied) == 9
    if mode != "multi_status_applied":  # where bisection re-sends applied rows
        assert set(applied.values()) == {1}


async def test_c19_rejected_row_backs_off_three_times_then_is_held_once(
    sim: Simulator, tmp_path: Path
) -> None:
    """BAD-07 is retried three times, each after a longer wait, then held:
    one `push_held` warning with Forstok's reason, and no more requests."""
    sim.install_faults(rejecting_bad_07())
    path = tmp_path / "state.sqlite3"
    async with engine_for(sim, tmp_path, warehouses=ONLY_GDG_1) as h:
        await h.engine.full_sync("test")
        with structlog.testing.capture_logs() as events:
            waits = await reject_until_held(h.engine, path, sim)
            make_retries_due(path)
            before = forstok_requests(sim)
            await h.engine.poll()
            await h.engine.push()

    assert forstok_requests(sim) == before
    assert len(waits) == 3
    assert 0 < waits[0] < waits[1] < waits[2]
    attempts, held, _, _ = failing_row(path)
    assert (attempts, held) == (4, 1)
    (warning,) = [e for e in events if e["event"] == "push_held"]
    assert warning["sku"] == "BAD-07"
    assert "variant rejected" in warning["reason"]


async def test_c19_held_row_is_released_when_its_quantity_changes(
    sim: Simulator, tmp_path: Path
) -> None:
    """A held row goes out again as soon as Accurate's quantity changes."""
    sim.install_faults(rejecting_bad_07())
    path = tmp_path / "state.sqlite3"
    async with engine_for(sim, tmp_path, warehouses=ONLY_GDG_1) as h:
        await settle(h)
        await reject_until_held(h.engine, path, sim)
        sim.install_faults(FaultPlan())

        sell(sim, "SI-1", "BAD-07", 1, "01/02/2026 10:00:00")
        await h.engine.poll()

    assert on_hand(sim, "BAD-07") == 9
    assert state_rows(path, "SELECT * FROM failing") == []


async def test_c19_held_row_is_released_by_the_next_full_sync(
    sim: Simulator, tmp_path: Path
) -> None:
    """The next full sync tries a held row again, without an operator."""
    sim.install_faults(rejecting_bad_07())
    path = tmp_path / "state.sqlite3"
    async with engine_for(sim, tmp_path, warehouses=ONLY_GDG_1) as h:
        await h.engine.full_sync("test")
        await reject_until_held(h.engine, path, sim)
        sim.install_faults(FaultPlan())

        await h.engine.full_sync("test")

    assert on_hand(sim, "BAD-07") == 10
    assert mismatches(sim, ONLY_GDG_1) == {}


async def test_c19_held_row_is_released_by_stocksync_retry(
    sim: Simulator, tmp_path: Path
) -> None:
    """`stocksync retry` releases a held row; the daemon's next poll pushes it."""
    sim.install_faults(rejecting_bad_07())
    path = tmp_path / "state.sqlite3"
    async with engine_for(sim, tmp_path, warehouses=ONLY_GDG_1) as h:
        await h.engine.full_sync("test")
        await reject_until_held(h.engine, path, sim)
        sim.install_faults(FaultPlan())
        config = write_config(sim, tmp_path, ONLY_GDG_1)

        code = await anyio.to_thread.run_sync(main, ["retry", "--config", str(config)])
        await h.engine.poll()

    assert code == 0
    assert on_hand(sim, "BAD-07") == 10
