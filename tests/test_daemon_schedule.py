"""The schedule (C25): late runs run once and are logged, never dropped.

apscheduler reads the wall clock through `datetime.now()`; the fake clock
below stands in for it, so that a ten-minute pause of the host takes no
time. The blocked-loop case uses the real clock and blocks for real.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from harness import Harness, make_settings
from structlog.testing import capture_logs

from daemon.notify import Notifier
from daemon.service import (
    FullSyncRequests,
    PollRequests,
    Schedule,
    StatusLine,
    Workers,
)
from daemon.simulator.app import Simulator

pytestmark = pytest.mark.timeout(30)

JAKARTA = ZoneInfo("Asia/Jakarta")


class FakeWallClock:
    """The wall clock apscheduler sees; it moves only when the test says."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        clock = self

        class ClockDatetime(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> Any:
                return clock.current.astimezone(tz)

        for module in ("apscheduler.schedulers.base", "apscheduler.triggers.interval"):
            monkeypatch.setattr(f"{module}.datetime", ClockDatetime)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeWallClock:
    """Five to six in the morning in Jakarta, five minutes before a full sync."""
    fake = FakeWallClock(datetime(2026, 3, 2, 5, 55, tzinfo=JAKARTA))
    fake.install(monkeypatch)
    return fake


async def requests_within(
    next_request: Any, seconds: float, limit: int = 10
) -> list[Any]:
    """What a request queue hands out within `seconds`."""
    taken: list[Any] = []
    with anyio.move_on_after(seconds):
        while len(taken) < limit:
            taken.append(await next_request())
    return taken


async def test_c25_after_a_ten_minute_pause_each_job_runs_once_and_is_logged(
    sim: Simulator, tmp_path: Path, clock: FakeWallClock
) -> None:
    """Ten polls and a 6-hourly full sync missed in a pause: one of each, late,
    each logged as `job_late` with how late and how many runs it replaces."""
    settings = make_settings(
        sim, tmp_path, poll_interval="60s", full_sync_cron="0 */6 * * *"
    )
    polls, full_syncs = PollRequests(), FullSyncRequests()
    schedule = Schedule(settings, polls, full_syncs, now=clock.now)

    with capture_logs() as logs:
        schedule.start()
        clock.advance(minutes=10, seconds=30)  # the host was paused
        schedule.wakeup()
        reasons = await requests_within(full_syncs.next, 0.5)
        ticks = await requests_within(polls.next, 0.2)
        schedule.shutdown()

    assert reasons == ["scheduled"]
    assert len(ticks) == 1
    late = {e["job"]: e for e in logs if e["event"] == "job_late"}
    assert late["full_sync"]["late_s"] == 330.0
    assert late["full_sync"]["missed_runs"] == 0
    assert late["full_sync"]["log_level"] == "warning"
    assert late["poll"]["late_s"] == 30.0
    assert late["poll"]["missed_runs"] == 9
    assert not [e for e in logs if e["event"] == "job_missed"]


async def test_c25_on_time_runs_are_not_reported(
    sim: Simulator, tmp_path: Path, clock: FakeWallClock
) -> None:
    """A run at its time logs nothing: `job_late` means something happened."""
    settings = make_settings(sim, tmp_path, poll_interval="60s")
    polls, full_syncs = PollRequests(), FullSyncRequests()
    schedule = Schedule(settings, polls, full_syncs, now=clock.now)

    with capture_logs() as logs:
        schedule.start()
        clock.advance(seconds=60)
        schedule.wakeup()
        ticks = await requests_within(polls.next, 0.3)
        schedule.shutdown()

    assert len(ticks) == 1
    assert [e for e in logs if e["event"].startswith("job_")] == []


async def test_c25_full_sync_runs_exactly_once_after_the_pause(
    harness: Harness, clock: FakeWallClock
) -> None:
    """End to end: the daemon's full-sync task against the simulator runs the
    02:00 full sync once after a pause from 01:55 to 02:05, not zero or
    several times."""
    clock.current = datetime(2026, 3, 2, 1, 55, tzinfo=JAKARTA)
    workers = Workers(harness.settings, StatusLine(Notifier({})), now=clock.now)

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(workers.full_sync_loop, harness.engine)
            workers.schedule.start()
            clock.advance(minutes=10)
            workers.schedule.wakeup()
            with anyio.fail_after(10):
                # Log lines set no event to wait on: look every 20 ms.
                while not [e for e in logs if e["event"] == "full_sync_finished"]:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            workers.schedule.wakeup()  # a second look finds nothing due
            await anyio.sleep(0.3)
            tg.cancel_scope.cancel()
        workers.schedule.shutdown()

    started = [e for e in logs if e["event"] == "full_sync_started"]
    assert [e["reason"] for e in started] == ["scheduled"]
    assert (await harness.engine.state.last_runs())["full_sync"]["outcome"] == "ok"
    assert [e["job"] for e in logs if e["event"] == "job_late"] == ["poll", "full_sync"]


async def test_c25_a_blocked_loop_delays_the_poll_but_never_drops_it(
    sim: Simulator, tmp_path: Path
) -> None:
    """The loop is blocked for 2 s across four fire times of a 0.5 s poll: the
    poll runs once when the loop is back, with a `job_late` line, and no
    run is reported missed (apscheduler's default grace would drop it)."""
    settings = make_settings(sim, tmp_path, poll_interval="500ms")
    polls, full_syncs = PollRequests(), FullSyncRequests()
    schedule = Schedule(settings, polls, full_syncs)

    with capture_logs() as logs:
        schedule.start()
        time.sleep(2.2)  # noqa: ASYNC251  # the blocked event loop under test
        ticks = await requests_within(polls.next, 0.25)
        schedule.shutdown()

    assert len(ticks) == 1
    late = [e for e in logs if e["event"] == "job_late"]
    assert [e["job"] for e in late] == ["poll"]
    assert late[0]["missed_runs"] >= 2
    assert not [e for e in logs if e["event"] == "job_missed"]
