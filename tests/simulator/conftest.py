"""Fixtures for the simulator's own tests (helpers live in simhttp.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from daemon.simulator import SimConfig, Simulator
from simulator.simhttp import Forstok, api_token, plain_client, small_shop


@pytest.fixture
def sim_config() -> SimConfig:
    return small_shop()


@pytest.fixture
def sim(sim_config: SimConfig) -> Iterator[Simulator]:
    """The simulator on its own thread and loop, like a remote service."""
    simulator = Simulator(sim_config)
    simulator.start_in_thread()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
async def accurate(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    """A signed client on the first data host."""
    async with plain_client(
        base_url=sim.accurate_data_urls[0] + "/accurate/api",
        auth=api_token(sim),
        timeout=5,
    ) as client:
        yield client


@pytest.fixture
async def control(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with plain_client(base_url=sim.control_url, timeout=5) as client:
        yield client


@pytest.fixture
async def forstok(sim: Simulator) -> AsyncIterator[Forstok]:
    async with plain_client(timeout=5) as client:
        yield Forstok(client, sim)
