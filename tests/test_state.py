"""The SQLite state on a real file: queues, monotonic readings, locking."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from daemon.state import RUNS_KEPT, DocumentRecord, Reading, State


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[State]:
    opened = await State.open(tmp_path / "state.sqlite3")
    yield opened
    await opened.close()


async def test_c20_cursor_and_pairs_commit_together(tmp_path: Path) -> None:
    """After a poll is recorded, a reopened file holds both cursor and pairs."""
    path = tmp_path / "state.sqlite3"
    state = await State.open(path)
    doc = DocumentRecord(30, "SI-30", "01/02/2026 12:00:00", 1, frozenset({(7, 1)}))
    await state.record_documents(
        "sales_invoice", [doc], [], {(7, 1): "SI-30"}, doc.last_update
    )
    await state.close()

    reopened = await State.open(path)
    try:
        assert (await reopened.cursors()) == {"sales_invoice": "01/02/2026 12:00:00"}
        assert [
            (p.item_id, p.warehouse_id) for p in await reopened.pending_pairs()
        ] == [(7, 1)]
    finally:
        await reopened.close()


async def test_pair_queued_again_while_read_stays_queued(state: State) -> None:
    """Removing a pair only takes the copy that was read, not a newer request."""
    await state.queue_pairs({(1, 1): "SI-1"})
    (taken,) = await state.pending_pairs()
    await state.queue_pairs({(1, 1): "SI-2"})

    await state.record_readings(
        [Reading(1, 1, Decimal(5), "2026-02-01T03:00:00+00:00")], [taken], [], "x"
    )

    (left,) = await state.pending_pairs()
    assert left.reason == "SI-2"


async def test_older_reading_never_replaces_newer(state: State) -> None:
    newer = Reading(1, 1, Decimal(9), "2026-02-01T03:00:05.000000+00:00")
    older = Reading(1, 1, Decimal(10), "2026-02-01T03:00:00.000000+00:00")

    await state.record_readings([newer], [], [], "incremental")
    await state.record_readings([older], [], [], "full sync")

    assert (await state.readings([1]))[(1, 1)].quantity == Decimal(9)


async def test_c24_no_locked_errors_beside_a_long_reader(tmp_path: Path) -> None:
    """A deferred reader elsewhere does not make our cursor writes fail."""
    path = tmp_path / "state.sqlite3"
    state = await State.open(path)
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM item").fetchall()
    try:

        async def write(n: int) -> None:
            doc = DocumentRecord(n, f"SI-{n}", "01/02/2026 12:00:00", 1, frozenset())
            await state.record_documents(
                "sales_invoice", [doc], [], {(n, 1): "x"}, doc.last_update
            )

        async with anyio.create_task_group() as tg:
            for n in range(1, 1001):
                tg.start_soon(write, n)
    finally:
        reader.rollback()
        reader.close()
    assert await state.count("pending_pair") == 1000
    await state.close()


async def test_c24_two_processes_writing_wait_instead_of_failing(
    tmp_path: Path,
) -> None:
    """Another connection's write transaction makes us wait, not fail."""
    path = tmp_path / "state.sqlite3"
    state = await State.open(path)
    other = sqlite3.connect(path, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO meta VALUES ('x', 'y')")

    async def release_soon() -> None:
        await anyio.sleep(0.3)
        other.commit()

    async with anyio.create_task_group() as tg:
        tg.start_soon(release_soon)
        await state.set_meta("cursor_probe", "1")
    other.close()
    assert await state.get_meta("x") == "y"
    await state.close()


async def test_pair_queued_by_another_process_during_a_read_stays_queued(
    tmp_path: Path,
) -> None:
    """An operator's command queues a pair the daemon is reading, with a
    sequence number of its own: the daemon's finished read still leaves the
    new request queued."""
    path = tmp_path / "state.sqlite3"
    daemon = await State.open(path)
    operator = await State.open(path)  # opened while the queues are empty
    try:
        for item in range(2, 40):  # the daemon's own work moves its counter on
            await daemon.queue_pairs({(item, 1): "SI-1"})
        await daemon.queue_pairs({(1, 1): "SI-2"})
        (taken,) = [p for p in await daemon.pending_pairs() if p.item_id == 1]

        await operator.queue_pairs({(1, 1): "retry requested"})
        await daemon.record_readings(
            [Reading(1, 1, Decimal(5), "2026-02-01T03:00:00+00:00")], [taken], [], "x"
        )

        left = [p for p in await daemon.pending_pairs() if p.item_id == 1]
        assert [p.reason for p in left] == ["retry requested"]
    finally:
        await operator.close()
        await daemon.close()


async def test_newest_run_is_the_last_recorded_whatever_the_clock_said(
    tmp_path: Path,
) -> None:
    """A complete full sync stamped while the clock ran ahead, then one cut
    short by a kill: the cut-short run is the newest, so the next start runs
    a full sync again."""
    path = tmp_path / "state.sqlite3"
    state = await State.open(path)
    try:
        await state.start_run("ahead", "full_sync")
        await state.finish_run("ahead", "ok", {}, None)
        with sqlite3.connect(path) as db:  # as NTP would have left it
            db.execute("UPDATE run SET started_at = '2099-01-01T00:00:00Z'")
        await state.start_run("killed", "full_sync")

        newest = await state.newest_run("full_sync")
    finally:
        await state.close()

    assert newest is not None
    assert (newest["id"], newest["outcome"]) == ("killed", None)


async def test_runs_of_every_type_are_kept_to_a_bound(state: State) -> None:
    """A nightly full sync for years would otherwise grow the table that
    `status` reads whole; the newest of each type stay."""
    for n in range(RUNS_KEPT + 10):
        for run_type in ("poll", "full_sync"):
            await state.start_run(f"{run_type}-{n}", run_type)
            await state.finish_run(f"{run_type}-{n}", "ok", {}, None)

    for run_type in ("poll", "full_sync"):
        newest = await state.newest_run(run_type)
        assert newest is not None
        assert newest["id"] == f"{run_type}-{RUNS_KEPT + 9}"
    with sqlite3.connect(state.path) as db:
        rows = db.execute("SELECT type, count(*) FROM run GROUP BY type").fetchall()
    assert dict(rows) == {"poll": RUNS_KEPT, "full_sync": RUNS_KEPT}
