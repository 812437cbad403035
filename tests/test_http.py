"""Shared HTTP plumbing: limiter, Retry-After, backoff, query strings."""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import httpx
import pytest
from conftest import FakeTime
from hypothesis import given
from hypothesis import strategies as st

from daemon.errors import ServiceUnavailable
from daemon.http import (
    NORMAL,
    SLOWDOWN_RECOVERY_S,
    URGENT,
    RateLimiter,
    StampClock,
    backoff_delay,
    build_query,
    make_timeout,
    network_error,
    parse_retry_after,
    retry_after_delay,
    with_query,
)

NOW = 1_767_225_600.0  # Thu, 01 Jan 2026 00:00:00 GMT


def max_starts_in_window(starts: list[float], period: float) -> int:
    """The most starts that fall inside any half-open window of `period`."""
    ordered = sorted(starts)
    best = 0
    for i, first in enumerate(ordered):
        inside = [s for s in ordered[i:] if s < first + period]
        best = max(best, len(inside))
    return best


def test_retry_after_in_seconds() -> None:
    """A number of seconds is taken as it is."""
    assert parse_retry_after("5", NOW) == 5.0
    assert parse_retry_after(" 120 ", NOW) == 120.0


def test_retry_after_as_http_date() -> None:
    """An HTTP-date is read relative to `now`; a past date means no wait."""
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:07 GMT", NOW) == 7.0
    assert parse_retry_after("Wed, 31 Dec 2025 23:59:00 GMT", NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-3", "1.5e3", "Thu, 01 Jan"])
def test_unreadable_retry_after_is_none(value: str | None) -> None:
    """Anything but seconds or a full HTTP-date gives None (backoff applies)."""
    assert parse_retry_after(value, NOW) is None


@given(st.integers(min_value=1, max_value=30), st.integers(min_value=0))
def test_backoff_has_full_jitter_under_a_cap(attempt: int, seed: int) -> None:
    """Backoff lies in [0, min(cap, base·2^(n-1))]."""
    delay = backoff_delay(attempt, random.Random(seed), base=1.0, cap=60.0)
    assert 0.0 <= delay <= min(60.0, 2.0 ** (attempt - 1))


@given(st.floats(min_value=0, max_value=10_000), st.integers(min_value=0))
def test_retry_after_is_capped_with_small_jitter(wait: float, seed: int) -> None:
    """Retry-After is honoured up to the cap, plus at most 10 % or 1 s."""
    delay = retry_after_delay(wait, random.Random(seed), cap=600.0)
    capped = min(wait, 600.0)
    assert capped <= delay <= capped + min(1.0, capped * 0.1)


def test_query_keeps_commas_literal_and_encodes_the_rest() -> None:
    """Commas stay literal; brackets, pipes, spaces and slashes are encoded."""
    query = build_query(
        [
            ("fields", "id,number,lastUpdate"),
            ("filter.lastUpdate.val[0]", "01/02/2026 10:00:00"),
            ("sp.sort", "lastUpdate|asc;id|asc"),
            ("sp.page", 2),
        ]
    )

    assert query == (
        "fields=id,number,lastUpdate"
        "&filter.lastUpdate.val%5B0%5D=01%2F02%2F2026%2010%3A00%3A00"
        "&sp.sort=lastUpdate%7Casc%3Bid%7Casc"
        "&sp.page=2"
    )


def test_query_survives_httpx_unchanged() -> None:
    """httpx sends the prepared query byte for byte (no %2C for commas)."""
    url = with_query("https://zeus.example/accurate/api/x/list.do", [("f", "a,b")])
    request = httpx.Request("GET", url)
    assert request.url.raw_path == b"/accurate/api/x/list.do?f=a,b"
    assert with_query("https://h/p?x=1", [("y", "2")]) == "https://h/p?x=1&y=2"


def test_timeout_sets_every_phase() -> None:
    """connect, read, write and pool all have a deadline."""
    timeout = make_timeout(30.0)
    assert None not in (timeout.connect, timeout.read, timeout.write, timeout.pool)


def test_network_error_never_carries_the_url() -> None:
    """The error keeps the exception class only, not the request's URL."""
    request = httpx.Request("POST", "https://h/auth?secret_key=s3cr3t-value")
    error = network_error(
        "forstok", "auth", httpx.ConnectError("boom", request=request)
    )
    assert isinstance(error, ServiceUnavailable)
    assert "s3cr3t" not in str(error)
    assert "ConnectError" in str(error)


async def run_through(
    limiter: RateLimiter, fake_time: FakeTime, calls: int, hold_yields: int
) -> tuple[list[float], int]:
    """Push `calls` concurrent users through the limiter; return starts, peak."""
    starts: list[float] = []
    inside = 0
    peak = 0

    async def user() -> None:
        nonlocal inside, peak
        async with limiter:
            starts.append(fake_time.now)
            inside += 1
            peak = max(peak, inside)
            for _ in range(hold_yields):
                await anyio.lowlevel.checkpoint()
            inside -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(calls):
            tg.start_soon(user)
    return starts, peak


async def test_limiter_bounds_starts_per_window(fake_time: FakeTime) -> None:
    """No more than `rate` starts fall in any sliding window of `period`."""
    limiter = RateLimiter(8, 1.0, 50, fake_time.monotonic, fake_time.sleep)

    starts, _ = await run_through(limiter, fake_time, calls=50, hold_yields=0)

    assert len(starts) == 50
    assert max_starts_in_window(starts, 1.0) == 8
    assert max(starts) - min(starts) >= 6.0  # 50 starts need 7 windows


async def test_limiter_bounds_requests_in_flight(fake_time: FakeTime) -> None:
    """No more than `max_in_flight` users are inside at once."""
    limiter = RateLimiter(1000, 1.0, 3, fake_time.monotonic, fake_time.sleep)

    _, peak = await run_through(limiter, fake_time, calls=50, hold_yields=5)

    assert peak == 3


async def test_limiter_fractional_rate(fake_time: FakeTime) -> None:
    """A rate below one per period spaces starts by period / rate."""
    limiter = RateLimiter(0.5, 1.0, 1, fake_time.monotonic, fake_time.sleep)

    starts, _ = await run_through(limiter, fake_time, calls=3, hold_yields=0)

    assert [s - starts[0] for s in starts] == [0.0, 2.0, 4.0]


async def test_pause_until_holds_back_every_caller(fake_time: FakeTime) -> None:
    """After pause_until, nobody starts before the deadline."""
    limiter = RateLimiter(8, 1.0, 8, fake_time.monotonic, fake_time.sleep)
    limiter.pause_until(fake_time.now + 5.0)
    deadline = fake_time.now + 5.0

    starts, _ = await run_through(limiter, fake_time, calls=4, hold_yields=0)

    assert min(starts) >= deadline


async def test_cancelled_user_frees_its_slot(fake_time: FakeTime) -> None:
    """A user cancelled inside or while waiting gives its slot back."""
    limiter = RateLimiter(100, 1.0, 1, fake_time.monotonic, fake_time.sleep)

    with anyio.move_on_after(0.01):
        async with limiter:
            await anyio.sleep_forever()

    with anyio.fail_after(1):
        async with limiter:
            pass


async def test_urgent_user_starts_before_waiting_normal_ones(
    fake_time: FakeTime,
) -> None:
    """An URGENT user overtakes NORMAL users already waiting, never the bound:
    a document's detail read does not queue behind a poll's list calls."""
    limiter = RateLimiter(1, 1.0, 8, fake_time.monotonic, fake_time.sleep)
    starts: list[tuple[str, float]] = []

    async def user(name: str, priority: int) -> None:
        async with limiter.slot(priority):
            starts.append((name, fake_time.now))

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(user, f"list {n}", NORMAL)
        tg.start_soon(user, "detail", URGENT)

    assert [name for name, _ in starts] == ["list 0", "detail", "list 1", "list 2"]
    moments = [moment for _, moment in starts]
    assert max_starts_in_window(moments, 1.0) == 1


async def test_bounds_hold_for_mixed_priorities(fake_time: FakeTime) -> None:
    """URGENT and NORMAL users, some cancelled while they wait: every one
    that starts keeps to the window and the in-flight bound, and none is
    left waiting."""
    limiter = RateLimiter(8, 1.0, 3, fake_time.monotonic, fake_time.sleep)
    rng = random.Random(5)
    starts: list[float] = []
    inside = peak = finished = 0

    async def user(priority: int, patience: float) -> None:
        nonlocal inside, peak, finished
        with anyio.move_on_after(patience):
            async with limiter.slot(priority):
                starts.append(fake_time.now)
                inside += 1
                peak = max(peak, inside)
                try:
                    for _ in range(rng.randint(0, 5)):
                        await anyio.lowlevel.checkpoint()
                finally:
                    inside -= 1
        finished += 1

    async with anyio.create_task_group() as tg:
        for n in range(60):
            patience = 0.0 if n % 7 == 0 else 60.0
            tg.start_soon(user, rng.choice((URGENT, NORMAL)), patience)

    assert finished == 60
    assert max_starts_in_window(starts, 1.0) <= 8
    assert peak <= 3
    assert len(starts) >= 60 - 60 // 7 - 1


async def test_ready_waits_for_a_turn_without_taking_it(fake_time: FakeTime) -> None:
    """`ready` returns when a start would be let through, and takes none: the
    request built after it still starts at once."""
    limiter = RateLimiter(1, 1.2, 1, fake_time.monotonic, fake_time.sleep)
    async with limiter:
        first = fake_time.now

    await limiter.ready()
    ready_at = fake_time.now
    async with limiter:
        second = fake_time.now

    assert ready_at == second == first + 1.2


def test_limiter_rejects_nonsense() -> None:
    """Zero or negative bounds are a programming error."""
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0, 1.0, 1)


async def test_slow_down_halves_the_rate_then_recovers(fake_time: FakeTime) -> None:
    """After slow_down, 8 per window becomes 4; a quiet recovery period
    brings the configured rate back."""
    limiter = RateLimiter(8, 1.0, 50, fake_time.monotonic, fake_time.sleep)

    assert limiter.slow_down()
    slowed, _ = await run_through(limiter, fake_time, calls=20, hold_yields=0)
    fake_time.now += SLOWDOWN_RECOVERY_S
    recovered, _ = await run_through(limiter, fake_time, calls=16, hold_yields=0)

    assert max_starts_in_window(slowed, 1.0) == 4
    assert max_starts_in_window(recovered, 1.0) == 8


async def test_slow_down_once_per_window_and_never_below_an_eighth(
    fake_time: FakeTime,
) -> None:
    """Refusals in one window halve the rate once; with one start per window
    left, the window itself grows, to eight times its length at most."""
    limiter = RateLimiter(1, 1.0, 1, fake_time.monotonic, fake_time.sleep)

    assert limiter.slow_down()
    assert not limiter.slow_down()  # the same window
    assert limiter.bounds() == (1, 2.0)
    for _ in range(5):
        fake_time.now += 10.0
        limiter.slow_down()

    assert limiter.bounds() == (1, 8.0)


def test_stamps_go_on_when_the_wall_clock_is_stepped_back(
    fake_time: FakeTime,
) -> None:
    stamps = StampClock(fake_time.timebase)
    first = stamps.now()

    fake_time.wall_offset -= 3 * 3600  # NTP steps a clock 3 h ahead back
    fake_time.now += 10
    after_step = stamps.now()
    fake_time.now += 5
    later = stamps.now()

    assert after_step == pytest.approx(first + 10)
    assert later == pytest.approx(first + 15)


def test_stamps_follow_the_wall_clock_again_once_it_catches_up(
    fake_time: FakeTime,
) -> None:
    stamps = StampClock(fake_time.timebase)
    stamps.keep_after(fake_time.wall() + 60)  # stored by a run whose clock ran ahead

    fake_time.now += 30
    assert stamps.now() == pytest.approx(fake_time.wall() + 60)
    fake_time.now += 100
    fake_time.wall_offset += 100  # the wall clock jumps ahead of the carried stamp
    assert stamps.now() == pytest.approx(fake_time.wall())
