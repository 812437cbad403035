"""The daemon shell: signals, schedule, readiness, and a shutdown that cannot hang.

Start-up order matters (C27). `python -m daemon run` holds SIGHUP, SIGTERM
and SIGINT from its first line (`daemon.early`); `run_daemon` opens its own
signal receiver before any slow work and replays what was held, so a reload
that arrives early is queued rather than fatal. systemd hears READY=1 only
once the configuration is valid, the state lock is held, the state is open
and the handlers are in place.

apscheduler is used as a clock only: its jobs set events that named tasks
in our own task group wait on. Work therefore stays under structured
concurrency and is cancelled cleanly on shutdown, while apscheduler brings
cron expressions and coalescing. A late run is run once and logged, never
dropped (C25).

Shutdown: the first SIGTERM (or SIGINT) stops intake, gives the units of
work in flight a short grace period to finish, then cancels them. That is
safe at any point: every state write is one shielded transaction, and a
pair leaves the push queue only once Forstok has accepted it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog
from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from daemon import early
from daemon.accurate import (
    AccurateClient,
    OAuthTokens,
    restored_oauth_tokens,
    saved_oauth_tokens,
)
from daemon.config import Settings
from daemon.errors import CredentialError, ServiceError, StateUnusable
from daemon.forstok import ForstokClient
from daemon.lock import InstanceLock
from daemon.logs import fresh_context, new_run_id
from daemon.notify import Notifier, watchdog_loop
from daemon.report import (
    LAST_PUSH_KEY,
    PUSH_PROBLEM_KEY,
    SETTINGS_KEY,
    settings_summary,
)
from daemon.state import State
from daemon.sync import PUSH_COUNTS, Counts, Engine
from daemon.timefmt import iso_utc, utc_now

log = structlog.get_logger("daemon.service")

# Work in flight at SIGTERM gets this long (or one request timeout, if
# shorter) to finish; systemd's TimeoutStopSec is 30 s.
SHUTDOWN_GRACE_S = 5.0
# A scheduled run this late is worth a warning: apscheduler 3 would, by
# default, have dropped it (a misfire grace of 1 s).
LATE_AFTER_S = 1.0
# Counting missed runs walks the trigger; stop counting somewhere.
MISSED_COUNT_CAP = 10_000
EX_SOFTWARE = 70
DATA_HOST_KEY = "accurate_data_host"
OAUTH_TOKENS_KEY = "accurate_oauth_tokens"

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


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
    """Requests to poll (or push); any number while busy collapse into one."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def request(self) -> None:
        self._event.set()

    async def next(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


class Shutdown:
    """Stops intake at once, and lets units of work in flight finish for a while."""

    def __init__(self) -> None:
        self.requested = anyio.Event()
        self._in_flight: dict[str, int] = {}
        self._idle = anyio.Event()
        self._idle.set()

    @property
    def accepting(self) -> bool:
        return not self.requested.is_set()

    @property
    def in_flight(self) -> list[str]:
        return sorted(self._in_flight)

    @contextmanager
    def unit(self, name: str) -> Iterator[None]:
        """Mark a unit of work, so that a shutdown waits for it (briefly)."""
        if not self._in_flight:
            self._idle = anyio.Event()
        self._in_flight[name] = self._in_flight.get(name, 0) + 1
        try:
            yield
        finally:
            left = self._in_flight.pop(name) - 1
            if left:
                self._in_flight[name] = left
            if not self._in_flight:
                self._idle.set()

    async def drain(self, grace: float) -> list[str]:
        """Wait up to `grace` seconds for the work in flight; what is left."""
        with anyio.move_on_after(grace):
            await self._idle.wait()
        return self.in_flight


class StatusLine:
    """The line `systemctl status` shows, composed from what each task does."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._problem: str | None = None
        self._full_sync: str | None = None
        self._poll = "starting: reading warehouses and mapping from Accurate"
        # READY=1 carries the first text.
        self._sent: str | None = self.text

    @property
    def text(self) -> str:
        poll = self._poll
        if poll.startswith("next poll") and not (self._problem or self._full_sync):
            poll = f"idle, {poll}"
        return "; ".join(p for p in (self._problem, self._full_sync, poll) if p)

    def problem(self, text: str | None) -> None:
        self._problem = text
        self._send()

    def full_sync(self, text: str | None) -> None:
        self._full_sync = text
        self._send()

    def poll(self, text: str) -> None:
        self._poll = text
        self._send()

    def stopping(self) -> None:
        self._problem = self._full_sync = None
        self._poll = "stopping"
        self._send()

    def _send(self) -> None:
        text = self.text
        if text != self._sent:
            self._sent = text
            self._notifier.status(text)


class Schedule:
    """apscheduler as a clock: a poll tick every interval, full syncs by cron.

    Every job coalesces (runs missed while the loop was blocked or the host
    paused become one run), runs one instance at a time, and has no misfire
    limit, so a late run still runs (C25). A run at least `LATE_AFTER_S`
    late, or standing in for missed ones, is logged as `job_late`.
    """

    def __init__(
        self,
        settings: Settings,
        polls: PollRequests,
        full_syncs: FullSyncRequests,
        now: Clock = _utc_now,
    ) -> None:
        zone = settings.accurate.timezone
        self._now = now
        self._scheduler = AsyncIOScheduler(timezone=zone)
        self._previous: dict[str, datetime] = {}
        self._stopped = False
        options: dict[str, Any] = {
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": None,
        }

        async def tick_poll() -> None:
            polls.request()

        async def tick_full_sync() -> None:
            full_syncs.request("scheduled")

        interval = IntervalTrigger(seconds=settings.sync.poll_interval, timezone=zone)
        cron = CronTrigger.from_crontab(settings.sync.full_sync_cron, timezone=zone)
        self._scheduler.add_job(tick_poll, interval, id="poll", **options)
        self._scheduler.add_job(tick_full_sync, cron, id="full_sync", **options)
        self._scheduler.add_listener(self._submitted, EVENT_JOB_SUBMITTED)
        self._scheduler.add_listener(
            self._missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )

    def start(self) -> None:
        started = self._now()
        for job in self._scheduler.get_jobs():
            self._previous[job.id] = started
        self._scheduler.start()

    def wakeup(self) -> None:
        """Run whatever is due now; apscheduler's timer does this at each
        fire time, and a test calls it after moving its fake clock."""
        self._scheduler.wakeup()

    def shutdown(self) -> None:
        # apscheduler defers the shutdown to the loop: call it only once.
        if self._scheduler.running and not self._stopped:
            self._stopped = True
            self._scheduler.shutdown(wait=False)

    def next_run_in(self, job_id: str) -> float | None:
        """Seconds until the job's next run, if it has one."""
        job = self._scheduler.get_job(job_id)
        moment: datetime | None = getattr(job, "next_run_time", None)
        if moment is None:
            return None
        return max(0.0, (moment - self._now()).total_seconds())

    def _submitted(self, event: JobSubmissionEvent) -> None:
        scheduled: datetime = event.scheduled_run_times[-1]
        previous = self._previous.get(event.job_id, scheduled)
        self._previous[event.job_id] = scheduled
        late = (self._now() - scheduled).total_seconds()
        missed = self._count_missed(event.job_id, previous, scheduled)
        if late >= LATE_AFTER_S or missed:
            log.warning(
                "job_late",
                job=event.job_id,
                scheduled=scheduled.astimezone(UTC).isoformat(),
                late_s=round(late, 1),
                missed_runs=missed,
                action="running it once now",
            )

    def _count_missed(self, job_id: str, after: datetime, until: datetime) -> int:
        """Fire times strictly between `after` and `until` (coalesced away)."""
        job = self._scheduler.get_job(job_id)
        if job is None:
            return 0
        count, moment = 0, after
        while count < MISSED_COUNT_CAP:
            moment = job.trigger.get_next_fire_time(moment, moment)
            if moment is None or moment >= until:
                break
            count += 1
        return count

    def _missed(self, event: JobEvent) -> None:
        # With the options above apscheduler should never report these; if
        # it does, the run was dropped, and that must not go unnoticed.
        times = getattr(event, "scheduled_run_times", None) or [
            getattr(event, "scheduled_run_time", None)
        ]
        log.warning(
            "job_missed",
            job=event.job_id,
            scheduled=str(times[-1]),
            why="max instances" if event.code == EVENT_JOB_MAX_INSTANCES else "late",
        )


@asynccontextmanager
async def open_engine(
    settings: Settings, *, dry_run: bool | None = None
) -> AsyncIterator[Engine]:
    """State, both clients and the engine, closed in reverse order."""
    state = await State.open(settings.state_path)
    try:
        data_host = await state.get_meta(DATA_HOST_KEY)
        known_host = data_host

        saved_tokens = await state.get_meta(OAUTH_TOKENS_KEY)

        async def save_host(host: str) -> None:
            # The first host learned on a new state is news to nobody (the
            # client logs `accurate_data_host`); only a change is a move.
            nonlocal known_host
            await state.set_meta(DATA_HOST_KEY, host)
            if known_host is not None and host != known_host:
                log.info("accurate_host_moved", host=host, previous=known_host)
            known_host = host

        async def save_tokens(tokens: OAuthTokens) -> None:
            # Rotated tokens replace the config's: the old refresh token is dead.
            text = saved_oauth_tokens(tokens, settings.accurate)
            await state.set_meta(OAUTH_TOKENS_KEY, text)

        accurate = AccurateClient(
            settings.accurate,
            data_host=data_host,
            on_data_host=save_host,
            oauth_state=restored_oauth_tokens(saved_tokens, settings.accurate),
            on_oauth_tokens=save_tokens,
        )
        forstok = ForstokClient(settings.forstok)
        try:
            yield Engine(
                settings,
                state,
                accurate,
                forstok,
                dry_run=dry_run,
                forstok_pace=forstok.limiter,
            )
        finally:
            with anyio.CancelScope(shield=True):
                await accurate.aclose()
                await forstok.aclose()
    finally:
        await state.close()


async def record_start(engine: Engine, dry_run: bool | None) -> None:
    """Record the settings this process runs with, for `stocksync status`
    (the file may change after the start); forget the last run's push
    problem, which nobody has seen since."""
    record = {
        "pid": os.getpid(),
        "started_at": iso_utc(utc_now()),
        "config": str(engine.settings.source or ""),
        "dry_run_from": "--dry-run" if dry_run is not None else "sync.dry_run",
        "settings": settings_summary(engine.settings, engine.dry_run),
    }
    await engine.state.set_meta(SETTINGS_KEY, json.dumps(record))
    await engine.state.set_meta(PUSH_PROBLEM_KEY, "null")


async def push_round(engine: Engine) -> Counts:
    """One round of the push step, ended by one `push_finished` line if it
    did anything. The daemon pushes apart from its polls, so their summary
    lines cannot count the pushes."""
    run_id = new_run_id()
    counts = Counts()
    started = time.monotonic()
    with structlog.contextvars.bound_contextvars(run_id=run_id):
        try:
            await engine.push(counts)
        except ServiceError as error:
            counts.errors += 1
            log.error("push_failed", error=str(error))
        finally:
            with anyio.CancelScope(shield=True):
                await _push_finished(engine, run_id, counts, started)
    return counts


async def _push_finished(
    engine: Engine, run_id: str, counts: Counts, started: float
) -> None:
    await save_push_problem(engine)
    done = {key: getattr(counts, key) for key in PUSH_COUNTS}
    if not any(done.values()) and not counts.errors:
        return  # nothing was queued: not worth a line every poll interval
    elapsed = round(time.monotonic() - started, 3)
    log.info("push_finished", elapsed_s=elapsed, errors=counts.errors, **done)
    record = {
        "run_id": run_id,
        "finished_at": iso_utc(utc_now()),
        "elapsed_s": elapsed,
        "dry_run": engine.dry_run,
        "counts": done,
    }
    await engine.state.set_meta(LAST_PUSH_KEY, json.dumps(record))


async def save_push_problem(engine: Engine) -> None:
    """Keep what stops pushes (or that nothing does) where status reads it."""
    problem = engine.push_problem
    text = json.dumps(None if problem is None else vars(problem))
    if await engine.state.get_meta(PUSH_PROBLEM_KEY) != text:
        await engine.state.set_meta(PUSH_PROBLEM_KEY, text)


async def repush_full_sync(
    engine: Engine, reason: str, progress: Callable[[str], None] | None = None
) -> Counts:
    """A full sync that sends every mapped pair's value, even one equal to
    what Forstok last accepted: Forstok has no API to read its stock back,
    so this is the only way to undo a change made by hand there.

    Every accepted value is first marked unconfirmed (as if its request had
    gone unanswered); the full sync then sends each pair it reads. Pairs it
    does not queue (no stock in Accurate, before or now) follow in one more
    push round. All of it goes through the ordinary, paced push.
    """
    marked = await engine.state.unsettle_pushed()
    log.info("repush_requested", pairs=marked)
    counts = await engine.full_sync(reason, progress)
    targets = [
        (item_id, forstok_id)
        for item_id in engine.mapping.targets
        for forstok_id in engine.warehouses.feeds
    ]
    await engine.state.queue_targets(targets, "full sync --repush")
    rest = await push_round(engine)
    for key in PUSH_COUNTS:
        setattr(counts, key, getattr(counts, key) + getattr(rest, key))
    return counts


async def run_daemon(settings: Settings, *, dry_run: bool | None = None) -> int:
    """Run until SIGTERM or SIGINT; returns the process exit status.

    Raises InstanceLocked, having touched nothing, when another process
    works on the same state file.
    """
    fresh_context()
    previous = {signum: signal.getsignal(signum) for signum in early.HELD}
    try:
        with anyio.open_signal_receiver(*early.HELD) as received:
            try:
                return await _serve(settings, received, dry_run)
            finally:
                # Closing the receiver resets the signals to their defaults
                # for a moment; blocked, they wait for the handlers below.
                signal.pthread_sigmask(signal.SIG_BLOCK, early.HELD)
    finally:
        # Give the signals back to whoever had them: under `python -m daemon`
        # that is daemon.early, so one arriving during the last moments of
        # teardown is held rather than fatal.
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, early.HELD)


async def _serve(
    settings: Settings, received: AsyncIterator[int], dry_run: bool | None
) -> int:
    notifier = Notifier()
    status = StatusLine(notifier)
    workers = Workers(settings, status)
    for signum in early.held_signals():
        workers.on_signal(signum, held=True)

    with InstanceLock(settings.state_path):
        try:
            async with open_engine(settings, dry_run=dry_run) as engine:
                await record_start(engine, dry_run)
                await _run(engine, workers, received, notifier)
        except StateUnusable:
            raise  # found on opening: the caller's one line and exit 78
        except Exception:
            log.exception("daemon_crashed")
            return EX_SOFTWARE
    log.info("daemon_stopped")
    return 0


async def _run(
    engine: Engine, workers: Workers, received: AsyncIterator[int], notifier: Notifier
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(workers.receive_signals, received, name="signals")
        notifier.ready(workers.status.text)
        log.info(
            "daemon_started",
            state=str(engine.settings.state_path),
            dry_run=engine.dry_run,
            watchdog_s=notifier.watchdog_interval(),
        )
        workers.schedule.start()
        try:
            tg.start_soon(watchdog_loop, notifier, name="watchdog")
            tg.start_soon(workers.run, engine, name="work")
            await workers.shutdown.requested.wait()
            notifier.stopping()
            await workers.stop(engine.settings)
        finally:
            workers.schedule.shutdown()
        tg.cancel_scope.cancel()


class Workers:
    """The daemon's named tasks and the requests that drive them."""

    def __init__(
        self, settings: Settings, status: StatusLine, now: Clock = _utc_now
    ) -> None:
        self.status = status
        self.full_syncs = FullSyncRequests()
        self.polls = PollRequests()
        self.pushes = PollRequests()
        self.shutdown = Shutdown()
        self.schedule = Schedule(settings, self.polls, self.full_syncs, now)

    # -- signals ---------------------------------------------------------------

    async def receive_signals(self, received: AsyncIterator[int]) -> None:
        fresh_context()
        async for signum in received:
            self.on_signal(signum)

    def on_signal(self, signum: int, *, held: bool = False) -> None:
        """SIGHUP asks for a full sync; SIGTERM or SIGINT stops, once."""
        name = signal.Signals(signum).name
        if not self.shutdown.accepting:
            log.info("signal_ignored", signal=name, why="already stopping")
        elif signum == signal.SIGHUP:
            log.info("full_sync_requested", reason=name, during_start_up=held)
            self.full_syncs.request(name)
        else:
            log.info("signal_received", signal=name, during_start_up=held)
            self.shutdown.requested.set()

    async def stop(self, settings: Settings) -> None:
        """Stop intake, give work in flight a grace period, report what was left."""
        grace = min(
            SHUTDOWN_GRACE_S, max(settings.accurate.timeout, settings.forstok.timeout)
        )
        self.schedule.shutdown()
        self.status.stopping()
        log.info("daemon_stopping", in_flight=self.shutdown.in_flight, grace_s=grace)
        left = await self.shutdown.drain(grace)
        if left:
            log.warning(
                "work_abandoned",
                units=left,
                grace_s=grace,
                note="queued pairs stay queued and are pushed after the restart",
            )

    # -- work ------------------------------------------------------------------

    async def run(self, engine: Engine) -> None:
        """Learn warehouses and mapping, then poll, push and full-sync."""
        fresh_context()
        await self.prepare(engine)
        newest = await engine.state.newest_run("full_sync")
        if newest is None:
            self.full_syncs.request("no full sync yet")
        elif newest["outcome"] != "ok":
            outcome = newest["outcome"] or "cut short by a killed process"
            self.full_syncs.request(f"the last full sync did not complete: {outcome}")
        self.polls.request()
        # A change is pushed as soon as its stock is read, not after the poll.
        engine.on_targets_queued = self.pushes.request

        async with anyio.create_task_group() as tg:
            tg.start_soon(self.poll_loop, engine, name="poll_loop")
            tg.start_soon(self.push_loop, engine, name="push_loop")
            tg.start_soon(self.full_sync_loop, engine, name="full_sync_loop")

    async def prepare(self, engine: Engine) -> None:
        """Wait out an Accurate outage or refused credentials instead of exiting."""
        delay = 1.0
        while True:
            try:
                await engine.prepare()
                self.status.problem(None)
                return
            except CredentialError:
                # The client has logged the refusal and the action it needs.
                wait = engine.settings.accurate.credential_retry_interval
                self.status.problem("waiting: Accurate refused the credentials")
                await anyio.sleep(wait)
            except ServiceError as error:
                log.warning("prepare_failed", error=str(error), retry_in_s=delay)
                self.status.problem("waiting for Accurate")
                await anyio.sleep(delay)
                delay = min(delay * 2, 300.0)

    async def poll_loop(self, engine: Engine) -> None:
        """Poll and refresh; pushing runs apart, so a Forstok outage never
        stalls the reading of Accurate."""
        while True:
            await self.polls.next()
            if not self.shutdown.accepting:
                return
            if engine.accurate.holding_back():
                # Refused credentials or an outage: every read would fail at
                # once; the first poll after the client's hold tries again.
                # What is queued already still goes to Forstok.
                self.pushes.request()
                continue
            with self.shutdown.unit("poll"):
                fresh_context()
                self.status.poll("polling")
                try:
                    await engine.poll(push=False)
                except ServiceError as error:
                    log.error("poll_failed", error=str(error))
                self.pushes.request()
            if self.shutdown.accepting:
                self.status.poll(self._next_poll_text())

    async def push_loop(self, engine: Engine) -> None:
        while True:
            await self.pushes.next()
            if not self.shutdown.accepting:
                return
            with self.shutdown.unit("push"):
                fresh_context()
                await push_round(engine)

    async def full_sync_loop(self, engine: Engine) -> None:
        """One full sync at a time; requests during one make one more after it."""
        delay = 5.0
        while True:
            reason = await self.full_syncs.next()
            if not self.shutdown.accepting:
                return
            failed = False
            with self.shutdown.unit("full_sync"):
                fresh_context()
                self.status.full_sync("full sync starting")
                try:
                    await engine.full_sync(reason, progress=self.status.full_sync)
                    delay = 5.0
                except ServiceError:
                    failed = True  # the engine logged full_sync_failed
                finally:
                    self.status.full_sync(None)
                    with anyio.CancelScope(shield=True):
                        await save_push_problem(engine)
            if failed:
                # A failed full sync is the safety net missing: try again
                # soon rather than at the next scheduled run.
                log.warning("full_sync_retry", reason=reason, retry_in_s=delay)
                self.status.full_sync(f"full sync failed; retrying in {delay:g} s")
                await anyio.sleep(delay)
                delay = min(delay * 2, 900.0)
                self.full_syncs.request(f"retry after failure ({reason})")

    def _next_poll_text(self) -> str:
        seconds = self.schedule.next_run_in("poll")
        if seconds is None:
            return "idle"
        return f"next poll in {math.ceil(seconds)} s"
