"""Serving in-process, connection reuse, the request log and triggers."""

from __future__ import annotations

import anyio
import anyio.to_thread
import httpx

from daemon.simulator import Simulator
from daemon.simulator.observe import RequestLog
from simulator.simhttp import api_token, plain_client, small_shop


async def test_running_in_the_current_loop_with_keep_alive() -> None:
    """`async with sim.running()` serves here; a pooled client reuses one
    connection for several requests."""
    sim = Simulator(small_shop())
    async with sim.running(), plain_client(auth=api_token(sim)) as client:
        url = sim.accurate_data_urls[0] + "/accurate/api/item/list.do"
        statuses = [(await client.get(url)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert sim.listeners["accurate-data-1"].connections_accepted == 1


async def test_trigger_holds_the_nth_request_until_released(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """The 2nd list call fires the trigger and gets no answer until release;
    a crash test would SIGKILL the daemon at that moment."""
    trigger = sim.when_request("accurate", "*/item/list.do", nth=2)
    answers: list[int] = []

    async def call() -> None:
        answers.append((await accurate.get("/item/list.do")).status_code)

    await call()
    async with anyio.create_task_group() as group:
        group.start_soon(call)
        fired = await anyio.to_thread.run_sync(trigger.wait, 5.0)
        await anyio.sleep(0.1)
        held = list(answers)
        trigger.release()
    assert fired
    assert held == [200]
    assert answers == [200, 200]


async def test_trigger_without_hold_only_signals(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """hold=False marks the moment and lets the request through."""
    trigger = sim.when_request("accurate", "*/warehouse/*", hold=False)
    response = await accurate.get("/warehouse/list.do")
    assert trigger.is_set()
    assert response.status_code == 200


def test_log_measures_in_flight_and_per_second() -> None:
    """Peaks come from arrival and end times; refused requests do not count."""
    log = RequestLog()
    timeline = [(0.0, 0.5), (0.1, 0.2), (0.2, 0.6), (0.9, 1.0), (1.05, 1.1)]
    for arrived, ended in timeline:
        entry = log.begin("accurate", "/x", "GET")
        entry.arrived, entry.ended = arrived, ended
    refused = log.begin("accurate", "/x", "GET")
    refused.arrived, refused.ended, refused.limited = 0.15, 0.16, True
    # Back-to-back at 0.2: the second starts as the first ends, never both.
    assert log.max_in_flight_observed("accurate") == 2
    assert log.max_per_second_observed("accurate") == 4
    assert log.count("accurate", "/x") == 6
