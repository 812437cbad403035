"""Rate limits, measured where they matter: at the simulated services.

The clients limit themselves, process-wide, to the configured request rate
and requests in flight; with the defaults Accurate never has to refuse one
(C22). When a server's limit turns out tighter than ours, its refusals slow
the client down. Forstok pushes are spaced evenly by requests_per_minute.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import anyio
from harness import mismatches
from network_support import engine_on, events, in_sync, network_settings, sell
from structlog.testing import capture_logs

from daemon.simulator import Simulator


def limited(sim: Simulator, service: str) -> int:
    return sum(1 for e in sim.requests.entries(service) if e.limited)


async def with_cursors(sim: Simulator, tmp_path: Path) -> None:
    """Bring a state in sync quickly, with limits far above the simulator's,
    then let the simulator's one-second window forget those requests."""
    async with engine_on(network_settings(sim, tmp_path)) as engine:
        await in_sync(sim, engine)
    await anyio.sleep(1.0)
    sim.requests.reset()


async def test_default_limits_are_never_exceeded(
    sim: Simulator, tmp_path: Path
) -> None:
    """With Accurate's documented 8 calls/s and 8 in flight on both sides, a
    poll of 17 kinds at once reaches the rate yet never exceeds it: zero
    refusals."""
    await with_cursors(sim, tmp_path)
    sim.config.accurate.rate_per_second = 8
    sim.config.accurate.latency_s = 0.2
    settings = network_settings(sim, tmp_path, accurate={"requests_per_second": None})
    assert settings.accurate.requests_per_second == 8
    assert settings.accurate.max_in_flight == 8

    async with engine_on(settings) as engine:
        sell(sim)
        await engine.poll()

    assert limited(sim, "accurate") == 0
    assert 7 <= sim.requests.max_per_second_observed("accurate") <= 8
    assert sim.requests.max_in_flight_observed("accurate") <= 8
    assert mismatches(sim) == {}


async def test_lowered_in_flight_bound_holds(sim: Simulator, tmp_path: Path) -> None:
    """An operator who lowers accurate.max_in_flight to 2 (another app shares
    the database) gets at most 2 requests in flight at Accurate."""
    sim.config.accurate.max_in_flight = 2
    sim.config.accurate.latency_s = 0.05
    settings = network_settings(sim, tmp_path, accurate={"max_in_flight": 2})

    async with engine_on(settings) as engine:
        await in_sync(sim, engine)

    assert limited(sim, "accurate") == 0
    assert sim.requests.max_in_flight_observed("accurate") == 2
    assert mismatches(sim) == {}


async def test_tighter_server_limit_slows_the_client(
    sim: Simulator, tmp_path: Path
) -> None:
    """Accurate allowing 8 calls/s while we were told 16: its first refusals
    halve our rate, so refusals stop after the first burst and the poll
    completes."""
    await with_cursors(sim, tmp_path)
    sim.config.accurate.rate_per_second = 8
    settings = network_settings(sim, tmp_path, accurate={"requests_per_second": 16})

    with capture_logs() as logs:
        async with engine_on(settings) as engine:
            sell(sim)
            await engine.poll()

    refused = [e for e in sim.requests.entries("accurate") if e.limited]
    assert refused
    first_second = refused[0].arrived + 1.0
    assert [e for e in refused if e.arrived > first_second] == []
    assert len(events(logs, "http_rate_lowered")) == 1
    assert mismatches(sim) == {}


async def test_forstok_pushes_are_paced(sim: Simulator, tmp_path: Path) -> None:
    """forstok.requests_per_minute 300 means a request every 0.2 s at most,
    the token request included, and Forstok never refuses one."""
    sim.config.forstok.requests_per_minute = 300
    settings = network_settings(
        sim, tmp_path, forstok={"requests_per_minute": 300, "batch_size": 2}
    )

    async with engine_on(settings) as engine:
        await engine.full_sync("test")

    arrivals = [e.arrived for e in sim.requests.entries("forstok")]
    assert len(arrivals) >= 7  # a token and six pushes of two rows
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # Starts are 0.2 s apart; arrivals may drift by a few milliseconds.
    assert min(gaps) >= 0.15
    assert sum(gaps) / len(gaps) >= 0.195
    assert limited(sim, "forstok") == 0
    assert mismatches(sim) == {}
