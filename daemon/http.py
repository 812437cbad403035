"""HTTP plumbing shared by the Accurate and Forstok clients.

A client sends each request inside its service's `RateLimiter`, reads the whole
body before leaving it, and on a temporary failure asks its `Retrier` how long
to wait. Deadlines are httpx timeouts, never an outer cancel scope (C26): a
request cancelled from outside still returns its connection to the pool, but a
deadline must not be the reason it is cancelled.
"""

from __future__ import annotations

import email.utils
import heapq
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import quote

import anyio
import httpx
import structlog

from daemon.errors import RateLimited, RetriableError, ServiceUnavailable

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
RETRY_AFTER_JITTER_FRACTION = 0.1
RETRY_AFTER_JITTER_MAX_S = 1.0
SLOWDOWN_MAX = 8.0
SLOWDOWN_RECOVERY_S = 30.0
URGENT = 0
"""Limiter priority of reads that finish work already found (a document's
detail, an item's stock): they go before waiting NORMAL ones."""
NORMAL = 1


@dataclass(frozen=True)
class Timebase:
    """The clocks a client reads and the way it sleeps; tests pass fakes."""

    monotonic: Clock = time.monotonic
    wall: Clock = time.time
    sleep: Sleep = anyio.sleep


class StampClock:
    """Wall-clock times that never go back, for dating what a service said.

    Readings are ordered by these stamps, and a newer one must never lose
    to an older. When the host clock is stepped back (NTP correcting a
    clock that ran ahead, a VM restored from a snapshot), stamps go on from
    the last one at the pace of the monotonic clock until the wall clock
    catches up, instead of falling behind stamps already stored.
    """

    def __init__(self, time: Timebase) -> None:
        self._time = time
        self._last = 0.0
        self._last_monotonic = time.monotonic()

    def keep_after(self, stamp: float) -> None:
        """Never give a stamp before `stamp` (one stored by an earlier run)."""
        if stamp > self._last:
            self._last = stamp
            self._last_monotonic = self._time.monotonic()

    def now(self) -> float:
        monotonic = self._time.monotonic()
        carried = self._last + (monotonic - self._last_monotonic)
        stamp = max(self._time.wall(), carried)
        self._last, self._last_monotonic = stamp, monotonic
        return stamp


@dataclass(order=True)
class _Ticket:
    priority: int
    seq: int
    turn: anyio.Event | None = field(default=None, compare=False)


class RateLimiter:
    """Bounds request starts per sliding window and requests in flight.

    Use one per service and process, around exactly one request:
    `async with limiter: response = await client.request(...)`. No more than
    `rate` requests start in any `period` seconds, no more than `max_in_flight`
    are inside at once, and nobody starts before a `pause_until` deadline.
    A fractional `rate` is rounded down, so the bound always holds; below 1
    it becomes one start per `period / rate`. Waiting users start in order of
    priority (`slot`), then of arrival; the bounds are the same for all.

    After the server says we are too fast, `slow_down` halves the rate (down
    to an eighth): fewer starts per window while more than one is allowed,
    then a longer window. Each quiet `SLOWDOWN_RECOVERY_S` doubles it again,
    until the configured rate is back.
    """

    def __init__(
        self,
        rate: float,
        period: float,
        max_in_flight: int,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if rate <= 0 or period <= 0 or max_in_flight < 1:
            raise ValueError("rate, period and max_in_flight must be positive")
        self.capacity = max(1, int(rate))
        self.period = period if rate >= 1 else period / rate
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._paused_until = 0.0
        self._divisor = 1.0
        self._halved_at = -math.inf
        self._quiet_since = 0.0
        self._inside = 0
        # Waiters in order of (priority, arrival); only the first may start,
        # so that starts are recorded in order.
        self._queue: list[_Ticket] = []
        self._tickets = itertools.count()

    def pause_until(self, deadline: float) -> None:
        """Let nobody start before `deadline` (a reading of `clock`)."""
        self._paused_until = max(self._paused_until, deadline)

    def slow_down(self) -> bool:
        """Halve the rate for a while; False if it was halved just now.

        Refusals of requests started in one window share one cause, so they
        halve the rate once between them.
        """
        now = self._clock()
        self._relax(now)
        _, window = self.bounds()
        if now - self._halved_at < window or self._divisor >= SLOWDOWN_MAX:
            return False
        self._divisor *= 2
        self._halved_at = self._quiet_since = now
        return True

    def bounds(self) -> tuple[int, float]:
        """Starts allowed per window, and that window, after any slow-down."""
        rate = self.capacity / self._divisor
        allowed = max(1, int(rate))
        return allowed, self.period * allowed / rate

    def _relax(self, now: float) -> None:
        while self._divisor > 1.0 and now - self._quiet_since >= SLOWDOWN_RECOVERY_S:
            self._divisor /= 2
            self._quiet_since += SLOWDOWN_RECOVERY_S

    def slot(self, priority: int = NORMAL) -> _Slot:
        """`async with limiter.slot(URGENT):` starts before every waiting
        NORMAL user (never before the bounds allow); `async with limiter:`
        is `slot(NORMAL)`."""
        return _Slot(self, priority)

    async def ready(self, priority: int = NORMAL) -> None:
        """Wait until a start would be let through now, without taking it.

        A caller that builds its request from a queue waits here first, so
        that what was queued during the wait still goes in this request.
        """
        await self._admit(priority, take=False)

    async def __aenter__(self) -> None:
        await self._admit(NORMAL, take=True)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        self._inside -= 1
        self._wake_first()

    async def _admit(self, priority: int, take: bool) -> None:
        ticket = _Ticket(priority, next(self._tickets))
        heapq.heappush(self._queue, ticket)
        try:
            while True:
                if self._queue[0] is not ticket or self._inside >= self.max_in_flight:
                    # Woken when it comes first or a request leaves.
                    ticket.turn = anyio.Event()
                    await ticket.turn.wait()
                    continue
                now = self._clock()
                wait = self._time_to_wait(now)
                if wait <= 0:
                    break
                # A more urgent ticket may come first meanwhile; it then
                # sleeps the same wait, and this one checks again after.
                await self._sleep(wait)
            if take:
                self._starts.append(now)
                self._inside += 1
        finally:
            self._queue.remove(ticket)
            heapq.heapify(self._queue)
            self._wake_first()

    def _wake_first(self) -> None:
        if self._queue and self._queue[0].turn is not None:
            self._queue[0].turn.set()

    def _time_to_wait(self, now: float) -> float:
        self._relax(now)
        allowed, window = self.bounds()
        while self._starts and self._starts[0] <= now - window:
            self._starts.popleft()

        wait = self._paused_until - now
        if len(self._starts) >= allowed:
            # After a slow-down more may be inside than now allowed: wait
            # until all but `allowed - 1` of them have left the window.
            wait = max(wait, self._starts[-allowed] + window - now)

        return wait


class _Slot:
    """One request inside a limiter, admitted at a priority."""

    def __init__(self, limiter: RateLimiter, priority: int) -> None:
        self._limiter = limiter
        self._priority = priority

    async def __aenter__(self) -> None:
        await self._limiter._admit(self._priority, take=True)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._limiter._release()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value (seconds or HTTP-date).

    `now` is Unix time, used only for the HTTP-date form; a date in the past
    means 0. An unreadable value gives None.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()

    if text.isdigit():
        return float(text)

    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None

    return max(0.0, moment.timestamp() - now)


def server_time(response: httpx.Response) -> float | None:
    """The server's Unix time from its `Date` header, if it sent a valid one."""
    value = response.headers.get("Date")
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


def retry_after_of(response: httpx.Response, wall_now: float) -> float | None:
    """Retry-After of a response; an HTTP-date is read against the server's clock.

    Using the response's own `Date` keeps a skewed local clock from stretching
    or shortening the wait.
    """
    now = server_time(response)
    return parse_retry_after(
        response.headers.get("Retry-After"), wall_now if now is None else now
    )


def backoff_delay(
    attempt: int,
    rng: random.Random,
    *,
    base: float = BACKOFF_BASE_S,
    cap: float = BACKOFF_CAP_S,
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base·2^n))."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return rng.uniform(0.0, ceiling)


def retry_after_delay(retry_after: float, rng: random.Random, *, cap: float) -> float:
    """The server's wait, capped, plus a little jitter so callers do not align."""
    capped = min(max(0.0, retry_after), cap)
    spread = min(RETRY_AFTER_JITTER_MAX_S, capped * RETRY_AFTER_JITTER_FRACTION)
    return capped + rng.uniform(0.0, spread)


def build_query(pairs: Sequence[tuple[str, str | int]]) -> str:
    """Encode a query string, keeping commas literal.

    Accurate reads `fields=a,b` as a list only when the commas are literal
    (accurate §5), while httpx's `params=` sends them as `%2C`. Everything
    else is percent-encoded, brackets and `|` included, because Java servers
    refuse those characters unencoded.
    """
    return "&".join(
        f"{quote(key, safe=',')}={quote(str(value), safe=',')}" for key, value in pairs
    )


def with_query(url: str, pairs: Sequence[tuple[str, str | int]]) -> str:
    """`url` with `pairs` appended to whatever query it already has."""
    if not pairs:
        return url
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}{build_query(pairs)}"


def make_timeout(seconds: float) -> httpx.Timeout:
    """A timeout on every phase, so that no request can wait forever."""
    return httpx.Timeout(
        connect=min(seconds, 10.0), read=seconds, write=seconds, pool=seconds
    )


def make_http_client(
    transport: httpx.AsyncBaseTransport | None, timeout_s: float, connections: int
) -> httpx.AsyncClient:
    """The HTTP client both services use: every timeout set, no redirects
    followed (a 308 is Accurate's "database moved" and is handled by hand),
    and a pool no larger than the requests allowed in flight, so that a
    connection leaked by a cancelled request shows up at once as a pool
    timeout rather than after a hundred of them (C26)."""
    return httpx.AsyncClient(
        transport=transport,
        timeout=make_timeout(timeout_s),
        limits=httpx.Limits(
            max_connections=connections, max_keepalive_connections=connections
        ),
        follow_redirects=False,
        headers={"User-Agent": "stocksync"},
    )


def network_error(
    service: str, endpoint: str, exc: httpx.HTTPError
) -> ServiceUnavailable:
    """A transport failure as a retriable error.

    Only the exception's class is kept: httpx exceptions carry the request,
    whose URL and headers may hold credentials.
    """
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "network error"
    return ServiceUnavailable(service, endpoint, f"{kind} ({type(exc).__name__})")


def log_exchange(
    service: str,
    endpoint: str,
    outcome: httpx.Response | httpx.HTTPError,
    elapsed_s: float,
) -> None:
    """One debug line per request: where it went and how it ended, no URL."""
    if isinstance(outcome, httpx.Response):
        status: int | str = outcome.status_code
    else:
        status = type(outcome).__name__
    log.debug(
        "http_request",
        service=service,
        endpoint=endpoint,
        status=status,
        elapsed_ms=round(elapsed_s * 1000),
    )


@dataclass
class EndpointStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0


@dataclass
class ClientStats:
    """Requests sent, retries and rate-limit answers, per endpoint."""

    endpoints: dict[str, EndpointStats] = field(default_factory=dict)

    def of(self, endpoint: str) -> EndpointStats:
        return self.endpoints.setdefault(endpoint, EndpointStats())

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.endpoints.values())

    @property
    def retries(self) -> int:
        return sum(s.retries for s in self.endpoints.values())

    @property
    def rate_limited(self) -> int:
        return sum(s.rate_limited for s in self.endpoints.values())


class Retrier:
    """Decides whether and how long a client waits before trying again.

    A rate-limit answer pauses the whole service through its limiter, so every
    caller waits, and slows the limiter down; any other temporary failure
    delays only the caller that hit it. The server's Retry-After wins over
    our own backoff, up to a cap.
    """

    def __init__(
        self,
        service: str,
        *,
        max_retries: int,
        retry_after_max: float,
        limiter: RateLimiter,
        stats: ClientStats,
        timebase: Timebase,
        rng: random.Random,
    ) -> None:
        self.service = service
        self.max_retries = max_retries
        self.retry_after_max = retry_after_max
        self.limiter = limiter
        self.stats = stats
        self.timebase = timebase
        self.rng = rng

    async def wait(self, endpoint: str, error: RetriableError, attempt: int) -> None:
        """Wait before retry number `attempt`, or re-raise when none is left."""
        stats = self.stats.of(endpoint)
        if isinstance(error, RateLimited):
            stats.rate_limited += 1
            self._slow_down(endpoint)
        if attempt > self.max_retries:
            raise error

        delay = self.delay(error, attempt)
        stats.retries += 1
        log.warning(
            "http_retry",
            service=self.service,
            endpoint=endpoint,
            attempt=attempt,
            wait_s=round(delay, 3),
            reason=error.detail,
        )

        if isinstance(error, RateLimited):
            self.limiter.pause_until(self.timebase.monotonic() + delay)
        else:
            await self.timebase.sleep(delay)

    def _slow_down(self, endpoint: str) -> None:
        if self.limiter.slow_down():
            allowed, window = self.limiter.bounds()
            log.warning(
                "http_rate_lowered",
                service=self.service,
                endpoint=endpoint,
                requests=allowed,
                per_s=round(window, 3),
                recovery_s=SLOWDOWN_RECOVERY_S,
            )

    def delay(self, error: RetriableError, attempt: int) -> float:
        if error.retry_after is not None:
            return retry_after_delay(
                error.retry_after, self.rng, cap=self.retry_after_max
            )
        return backoff_delay(attempt, self.rng)
