"""Log context across tasks and threads (C28): right values, and no leaks.

The events are rendered by the production processors into a buffer and
parsed back, because `run_id`, `kind`, `sku` and `warehouse` reach an event
only through `merge_contextvars`, which `capture_logs()` leaves out.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from harness import Harness

from daemon.logs import configure_logging, fresh_context, reset_logging
from daemon.notify import Notifier
from daemon.service import StatusLine, Workers
from daemon.state import State

pytestmark = pytest.mark.timeout(30)

log = structlog.get_logger("test")
Events = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def events() -> Iterator[Events]:
    """The production log pipeline into a buffer, at debug; a reader of it."""
    buffer = io.StringIO()
    configure_logging("debug", "json", (), stream=buffer)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        reset_logging()
        structlog.contextvars.clear_contextvars()


async def test_c28_context_follows_each_task_through_sqlite_and_threads(
    events: Events, tmp_path: Path
) -> None:
    """Two runs interleave SKUs, SQLite calls and worker threads; every event
    carries its own run's run_id and the SKU of the moment."""
    state = await State.open(tmp_path / "state.sqlite3")
    structlog.contextvars.bind_contextvars(run_id="STALE", sku="STALE")

    async def run(run_id: str, skus: list[str]) -> None:
        fresh_context(run_id=run_id)
        for sku in skus:
            with structlog.contextvars.bound_contextvars(sku=sku):
                log.info("sku_started")
                await state.set_meta(f"last-{run_id}", sku)  # aiosqlite's thread
                await anyio.to_thread.run_sync(lambda: log.info("in_thread"))
                await anyio.lowlevel.checkpoint()
                log.info("sku_done")
        log.info("run_done")

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "R1", ["ABC-01", "ABC-02"], name="R1")
            tg.start_soon(run, "R2", ["XYZ-01", "XYZ-02"], name="R2")
    finally:
        await state.close()
    log.info("after")

    seen = [(e["event"], e.get("run_id"), e.get("sku")) for e in events()]
    skus = {"R1": {"ABC-01", "ABC-02"}, "R2": {"XYZ-01", "XYZ-02"}}
    for name, run_id, sku in seen[:-1]:
        assert run_id in skus, (name, run_id, sku)
        if name == "run_done":
            assert sku is None
        else:
            assert sku in skus[run_id], (name, run_id, sku)
    assert len([s for s in seen if s[0] == "in_thread"]) == 4
    assert seen[-1] == ("after", "STALE", "STALE")  # the parent keeps its own


async def test_c28_daemon_tasks_start_clean_and_runs_keep_their_own_ids(
    events: Events, harness: Harness
) -> None:
    """The daemon's first full sync and its polls run side by side: each
    event carries the run_id of its own run, per-kind events only a poll's,
    per-warehouse events only the full sync's, and nothing bound by the
    caller leaks into any task."""
    structlog.contextvars.bind_contextvars(
        run_id="STALE", sku="STALE", kind="STALE", warehouse="STALE"
    )
    workers = Workers(harness.settings, StatusLine(Notifier({})))

    def seen(name: str) -> bool:
        return any(e["event"] == name for e in events())

    async with anyio.create_task_group() as tg:
        tg.start_soon(workers.run, harness.engine)
        with anyio.fail_after(15):
            while not (seen("full_sync_finished") and seen("poll_finished")):  # noqa: ASYNC110
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()

    logged = events()
    assert not [e for e in logged if "STALE" in e.values()]
    full_sync = {e["run_id"] for e in logged if e["event"] == "full_sync_started"}
    polls = {e["run_id"] for e in logged if e["event"] == "poll_finished"}
    assert len(full_sync) == 1
    assert polls
    assert not full_sync & polls
    for event in logged:
        if event["event"].startswith("full_sync_") or "warehouse" in event:
            assert event.get("run_id") in full_sync, event
        if "kind" in event:
            assert event.get("run_id") in polls, event
