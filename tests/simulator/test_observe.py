"""Serving in-process, connection reuse, the request log and triggers."""

from __future__ import annotations

import anyio
import anyio.to_thread
import httpx

from daemon.simulator import Simulator
from daemon.simulator.faults import FaultAction, FaultPlan, FaultRule
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


async def test_trigger_at_answer_delivers_the_state_at_arrival(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """stage="answer": B's detail is answered on arrival (6) but held; the
    stock changes meanwhile, and the held answer still says 6. A read of A
    does not match the trigger's `params` and passes."""
    item_b = sim.accurate.item_by_no("B").id
    late = sim.when_request(
        "accurate", "*/item/detail.do", params={"id": str(item_b)}, stage="answer"
    )
    other = await accurate.get(f"/item/detail.do?id={sim.accurate.item_by_no('A').id}")
    answers: list[httpx.Response] = []

    async def read_b() -> None:
        answers.append(await accurate.get(f"/item/detail.do?id={item_b}"))

    async with anyio.create_task_group() as group:
        group.start_soon(read_b)
        assert await anyio.to_thread.run_sync(late.wait, 5.0)
        sim.accurate.adjust_stock_to("B", "GDG-1", 2)
        fresh = await accurate.get(f"/item/detail.do?id={item_b}")
        await anyio.sleep(0.1)
        held = list(answers)
        late.release()

    assert other.status_code == 200
    assert held == []
    assert _balance(fresh) == 2
    assert _balance(answers[0]) == 6


async def test_late_answer_fault_for_one_item(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """A `late_answer` rule with `params` delays only that item's answer,
    which still shows the stock at arrival."""
    item_b = sim.accurate.item_by_no("B").id
    rule = FaultRule(
        FaultAction("late_answer", seconds=0.4),
        "accurate",
        "*/item/detail.do",
        params={"id": str(item_b)},
    )
    sim.install_faults(FaultPlan([rule]))
    answers: list[httpx.Response] = []

    async def read_b() -> None:
        answers.append(await accurate.get(f"/item/detail.do?id={item_b}"))

    async with anyio.create_task_group() as group:
        group.start_soon(read_b)
        await anyio.sleep(0.2)
        sim.accurate.adjust_stock_to("B", "GDG-1", 2)
        item_a = sim.accurate.item_by_no("A").id
        quick = await accurate.get(f"/item/detail.do?id={item_a}")
        still_waiting = not answers

    assert quick.status_code == 200
    assert still_waiting
    assert _balance(answers[0]) == 6
    assert rule.applied == 1


async def test_request_log_keeps_bodies(sim: Simulator) -> None:
    """What a client sent can be compared afterwards (a resend is visible)."""
    async with plain_client() as client:
        await client.post(sim.forstok_auth_url, content=b'{"id": "x"}')
    (entry,) = sim.requests.entries("forstok")
    assert entry.body == b'{"id": "x"}'


def _balance(response: httpx.Response) -> float:
    """B's balance in GDG-1 from an item/detail.do answer."""
    rows = response.json()["d"]["detailWarehouseData"]
    (row,) = [r for r in rows if r["warehouseName"] == "GDG-1"]
    return float(row["balance"])
