"""C26: requests cancelled mid-flight never leak a pooled connection.

The simulator withholds its answer; each request is cancelled from outside
(as a deadline or a restarting sync would) once the simulator holds it.
After a hundred of them the next request must go through at once, and the
simulator's own connection counts show nothing was left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
from network_support import network_settings, plan

from daemon.accurate import AccurateClient
from daemon.forstok import ForstokClient, QuantityRow
from daemon.simulator import FaultAction, Simulator

CANCELLED = 100


def held(sim: Simulator, service: str) -> int:
    return sum(1 for e in sim.requests.entries(service) if e.fault == "hang")


async def cancel_each_once_held(
    sim: Simulator, service: str, start: Callable[[int], Coroutine[Any, Any, None]]
) -> None:
    """Start request n, wait until the simulator holds it, cancel it."""
    for n in range(CANCELLED):
        async with anyio.create_task_group() as tg:
            tg.start_soon(start, n)
            with anyio.fail_after(5):
                # Polled: the count lives in the simulator's thread.
                while held(sim, service) <= n:  # noqa: ASYNC110
                    await anyio.sleep(0.002)
            tg.cancel_scope.cancel()


async def settled(sim: Simulator, listener: str, at_most: int) -> int:
    """Open connections once the closes have reached the simulator."""
    with anyio.move_on_after(2):
        while sim.listeners[listener].connections_open > at_most:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    return sim.listeners[listener].connections_open


async def test_c26_hundred_cancelled_pushes(sim: Simulator, tmp_path: Path) -> None:
    """After 100 cancelled pushes, a push succeeds within a second on a pool
    of one connection; no connection is left open beyond it."""
    sim.config.forstok.requests_per_minute = 0  # no limit: 101 quick pushes
    forstok = {"requests_per_minute": 60000, "timeout": "30s"}
    settings = network_settings(sim, tmp_path, forstok=forstok).forstok
    hang = FaultAction("hang")
    sim.install_faults(plan(hang, "forstok", "*/quantities.json", count=CANCELLED))

    async with ForstokClient(settings) as client:

        async def push(n: int) -> None:
            await client.push_quantities([QuantityRow(f"P{n:03d}", 1, n)])

        await cancel_each_once_held(sim, "forstok", push)
        with anyio.fail_after(1):
            report = await client.push_quantities([QuantityRow("P101", 1, 101)])
        left_open = await settled(sim, "forstok", 1)

    assert [row.sku for row in report.applied] == ["P101"]
    assert sim.forstok.on_hand("P101", 1) == 101
    assert left_open <= 1
    assert sim.listeners["forstok"].peak_connections_open <= 2


async def test_c26_hundred_cancelled_reads(sim: Simulator, tmp_path: Path) -> None:
    """After 100 cancelled Accurate reads, a read succeeds within a second, and
    no more connections stay open than accurate.max_in_flight."""
    settings = network_settings(sim, tmp_path, accurate={"timeout": "30s"}).accurate
    hang = FaultAction("hang")
    sim.install_faults(plan(hang, "accurate", "*/item/list.do", count=CANCELLED))

    async with AccurateClient(settings) as client:

        async def read(_: int) -> None:
            await client.list_page("item", fields=["id", "no"])

        await cancel_each_once_held(sim, "accurate", read)
        with anyio.fail_after(1):
            page = await client.list_page("item", fields=["id", "no"])
        left_open = await settled(sim, "accurate-data-1", settings.max_in_flight)

    assert page.row_count == 6
    assert left_open <= settings.max_in_flight
    assert sim.listeners["accurate-data-1"].peak_connections_open <= 8
