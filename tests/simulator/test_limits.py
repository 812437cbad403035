"""Rate limits: Accurate 8/s and 8 in flight (§6), Forstok per minute."""

from __future__ import annotations

import email.utils
import time

import anyio
import httpx
import pytest

from daemon.simulator import SimConfig, Simulator
from simulator.simhttp import Forstok, small_shop


@pytest.fixture
def sim_config() -> SimConfig:
    """The documented Accurate limits, 8/s and 8 in flight."""
    config = small_shop()
    config.accurate.rate_per_second = 8
    config.accurate.max_in_flight = 8
    return config


async def _burst(client: httpx.AsyncClient, calls: int) -> list[httpx.Response]:
    responses: list[httpx.Response] = []

    async def call() -> None:
        responses.append(await client.get("/warehouse/list.do"))

    async with anyio.create_task_group() as group:
        for _ in range(calls):
            group.start_soon(call)
    return responses


async def test_ninth_concurrent_call_is_refused(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """With 8 slow calls in flight the 9th gets 429 + Retry-After (C22)."""
    sim.config.accurate.rate_per_second = 0
    sim.config.accurate.latency_s = 0.5
    responses = await _burst(accurate, 9)
    refused = [r for r in responses if r.status_code == 429]
    assert len(refused) == 1
    assert refused[0].headers["Retry-After"] == "1"
    assert refused[0].json() == {"s": False, "d": ["Terlalu banyak permintaan"]}
    assert sim.requests.max_in_flight_observed("accurate") == 8
    assert sim.requests.count("accurate", "*/warehouse/list.do", status=429) == 1


async def test_ninth_call_within_a_second_is_refused(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """Eight quick calls use the second's budget; the 9th waits for it."""
    sim.config.accurate.max_in_flight = 0
    statuses = sorted(r.status_code for r in await _burst(accurate, 9))
    assert statuses == [200] * 8 + [429]
    assert sim.requests.max_per_second_observed("accurate") == 8


async def test_http_200_variant_and_http_date_retry_after(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """The `s:false` at 200 variant; Retry-After as an HTTP-date."""
    sim.config.accurate.rate_per_second = 1
    await accurate.get("/warehouse/list.do")
    sim.config.accurate.retry_after_form = "http-date"
    dated = await accurate.get("/warehouse/list.do")
    sim.config.accurate.rate_limit_status = 200
    plain = await accurate.get("/warehouse/list.do")
    when = email.utils.parsedate_to_datetime(dated.headers["Retry-After"])
    assert dated.status_code == 429
    assert 0 < when.timestamp() - time.time() <= 2
    assert plain.status_code == 200
    assert plain.json() == {"s": False, "d": ["Terlalu banyak permintaan"]}


async def test_forstok_requests_per_minute(sim: Simulator, forstok: Forstok) -> None:
    """Past N requests a minute Forstok answers 429 with Retry-After seconds;
    the auth call counts against the same budget."""
    sim.config.forstok.requests_per_minute = 3
    token = await forstok.token()
    rows = [{"sku": "A", "warehouse_id": 1, "quantity": 1}]
    statuses = [(await forstok.push(rows, token)).status_code for _ in range(3)]
    refused = await forstok.push(rows, token)
    assert statuses == [200, 200, 429]
    assert 55 <= int(refused.headers["Retry-After"]) <= 60


async def test_forstok_one_request_in_flight(sim: Simulator, forstok: Forstok) -> None:
    """A second concurrent push is refused while the first is served."""
    sim.config.forstok.max_in_flight = 1
    token = await forstok.token()
    sim.config.forstok.latency_s = 0.5
    statuses: list[int] = []

    async def push() -> None:
        rows = [{"sku": "A", "warehouse_id": 1, "quantity": 1}]
        statuses.append((await forstok.push(rows, token)).status_code)

    async with anyio.create_task_group() as group:
        group.start_soon(push)
        group.start_soon(push)
    assert sorted(statuses) == [200, 429]
