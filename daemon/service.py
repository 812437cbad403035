"""The daemon shell: signals, schedule, readiness, and a shutdown that cannot hang.

Start-up order matters (C27): signal handlers exist before any slow work,
so a reload that arrives early is queued rather than fatal, and systemd
hears READY=1 only once the configuration is valid, the state is open and
the handlers are in place.

apscheduler is used as a clock only: its jobs set events that named tasks
in our own task group wait on. Work therefore stays under structured
concurrency and is cancelled cleanly on shutdown, while apscheduler brings
cron expressions, coalescing and misfire handling (C25).
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from daemon.accurate import AccurateClient
from daemon.config import Settings
from daemon.errors import CredentialError, ServiceError
from daemon.forstok import ForstokClient
from daemon.lock import InstanceLock
from daemon.notify import Notifier, watchdog_loop
from daemon.state import State
from daemon.sync import Engine

log = structlog.get_logger("daemon.service")

SHUTDOWN_GRACE_S = 8.0
DATA_HOST_KEY = "accurate_data_host"


class FullSyncRequests:
    """Requests for a full sync; any number during a run make one more run."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._reason: str | None = None

    def request(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
        self._event.set()

    async def next(self) -> str:
        await self._event.wait()
        self._event = anyio.Event()
        reason, self._reason = self._reason or "requested", None
        return reason


class PollRequests:
    """The scheduler's poll ticks; ticks during a poll collapse into one."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def request(self) -> None:
        self._event.set()

    async def next(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


@asynccontextmanager
async def open_engine(
    settings: Settings, *, dry_run: bool | None = None
) -> AsyncIterator[Engine]:
    """State, both clients and the engine, closed in reverse order."""
    state = await State.open(settings.state_path)
    try:
        data_host = await state.get_meta(DATA_HOST_KEY)

        async def save_host(host: str) -> None:
            await state.set_meta(DATA_HOST_KEY, host)
            log.info("accurate_host_moved", host=host)

        accurate = AccurateClient(
            settings.accurate, data_host=data_host, on_data_host=save_host
        )
        forstok = ForstokClient(settings.forstok)
        try:
            yield Engine(settings, state, accurate, forstok, dry_run=dry_run)
        finally:
            with anyio.CancelScope(shield=True):
                await accurate.aclose()
                await forstok.aclose()
    finally:
        await state.close()


async def run_daemon(settings: Settings, *, dry_run: bool | None = None) -> int:
    """Run until SIGTERM or SIGINT; returns the process exit status."""
    notifier = Notifier()
    full_syncs = FullSyncRequests()
    polls = PollRequests()

    with (
        anyio.open_signal_receiver(
            signal.SIGHUP, signal.SIGTERM, signal.SIGINT
        ) as signals,
        InstanceLock(settings.state_path),
    ):
        async with (
            open_engine(settings, dry_run=dry_run) as engine,
            anyio.create_task_group() as tg,
        ):
            stopping = anyio.Event()
            tg.start_soon(
                _handle_signals, signals, full_syncs, stopping, name="signals"
            )
            notifier.ready()
            log.info(
                "daemon_started",
                state=str(settings.state_path),
                dry_run=engine.dry_run,
            )

            scheduler = _scheduler(settings, polls, full_syncs)
            scheduler.start()
            try:
                tg.start_soon(watchdog_loop, notifier, name="watchdog")
                tg.start_soon(_work, engine, polls, full_syncs, notifier, name="work")
                await stopping.wait()
                notifier.stopping()
                log.info("daemon_stopping")
                tg.cancel_scope.cancel()
            finally:
                scheduler.shutdown(wait=False)
    log.info("daemon_stopped")
    return 0


async def _handle_signals(
    signals: Any, full_syncs: FullSyncRequests, stopping: anyio.Event
) -> None:
    async for signum in signals:
        if signum == signal.SIGHUP:
            log.info("full_sync_requested", reason="SIGHUP")
            full_syncs.request("SIGHUP")
        elif stopping.is_set():
            log.info(
                "signal_ignored",
                signal=signal.Signals(signum).name,
                why="already stopping",
            )
        else:
            log.info("signal_received", signal=signal.Signals(signum).name)
            stopping.set()


def _scheduler(
    settings: Settings, polls: PollRequests, full_syncs: FullSyncRequests
) -> AsyncIOScheduler:
    zone = settings.accurate.timezone
    scheduler = AsyncIOScheduler(timezone=zone)
    options: dict[str, Any] = {
        "coalesce": True,
        "max_instances": 1,
        # A run that is late for any reason still runs, once (C25).
        "misfire_grace_time": None,
    }

    async def tick_poll() -> None:
        polls.request()

    async def tick_full_sync() -> None:
        full_syncs.request("scheduled")

    scheduler.add_job(
        tick_poll,
        IntervalTrigger(seconds=settings.sync.poll_interval, timezone=zone),
        id="poll",
        **options,
    )
    scheduler.add_job(
        tick_full_sync,
        CronTrigger.from_crontab(settings.sync.full_sync_cron, timezone=zone),
        id="full_sync",
        **options,
    )

    def missed(event: JobEvent) -> None:
        log.warning(
            "job_missed", job=event.job_id, scheduled=str(event.scheduled_run_time)
        )

    scheduler.add_listener(missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    return scheduler


async def _work(
    engine: Engine,
    polls: PollRequests,
    full_syncs: FullSyncRequests,
    notifier: Notifier,
) -> None:
    await _prepare(engine, notifier)
    last = (await engine.state.last_runs()).get("full_sync")
    if last is None or last["outcome"] != "ok":
        full_syncs.request("no completed full sync yet")
    polls.request()

    pushes = PollRequests()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_poll_loop, engine, polls, pushes, notifier, name="poll_loop")
        tg.start_soon(_push_loop, engine, pushes, name="push_loop")
        tg.start_soon(
            _full_sync_loop, engine, full_syncs, notifier, name="full_sync_loop"
        )


async def _prepare(engine: Engine, notifier: Notifier) -> None:
    """Learn warehouses and mapping; wait out an outage instead of exiting."""
    delay = 1.0
    while True:
        try:
            await engine.prepare()
            return
        except CredentialError as error:
            wait = engine.settings.accurate.credential_retry_interval
            log.error(
                "accurate_credentials_rejected",
                error=str(error),
                action=error.action,
                retry_in_s=wait,
            )
            notifier.status("waiting: Accurate refused the credentials")
            await anyio.sleep(wait)
        except ServiceError as error:
            log.warning("prepare_failed", error=str(error), retry_in_s=delay)
            notifier.status("waiting for Accurate")
            await anyio.sleep(delay)
            delay = min(delay * 2, 300.0)


async def _poll_loop(
    engine: Engine, polls: PollRequests, pushes: PollRequests, notifier: Notifier
) -> None:
    """Poll and refresh; pushing runs apart, so a Forstok outage never stalls
    the reading of Accurate."""
    interval = engine.settings.sync.poll_interval
    while True:
        await polls.next()
        notifier.status("polling")
        try:
            await engine.poll(push=False)
        except ServiceError as error:
            log.error("poll_failed", error=str(error))
        pushes.request()
        notifier.status(f"idle, next poll in {interval:g} s")


async def _push_loop(engine: Engine, pushes: PollRequests) -> None:
    while True:
        await pushes.next()
        try:
            await engine.push()
        except ServiceError as error:
            log.error("push_failed", error=str(error))


async def _full_sync_loop(
    engine: Engine, full_syncs: FullSyncRequests, notifier: Notifier
) -> None:
    delay = 5.0
    while True:
        reason = await full_syncs.next()
        notifier.status("full sync starting")
        try:
            await engine.full_sync(reason, progress=notifier.status)
            delay = 5.0
        except ServiceError as error:
            # A failed full sync is the safety net missing: try again soon
            # rather than at the next scheduled run.
            log.error("full_sync_failed", error=str(error), retry_in_s=delay)
            notifier.status("full sync failed; retrying")
            await anyio.sleep(delay)
            delay = min(delay * 2, 900.0)
            full_syncs.request(f"retry after failure ({reason})")
        notifier.status("idle")
