"""The Accurate client rides out each fault of the plan, end to end.

Each test makes one poll (or a few) of the production engine meet one fault,
then checks the outcome (Forstok quantities, the sales-invoice cursor) and
the manner (what the simulator received and when, and the log events).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from harness import mismatches
from network_support import (
    LogEvents,
    back_in_sync,
    events,
    gap_after,
    plan,
    requests_to,
    sell,
    shared_engine,
)
from structlog.testing import capture_logs

from daemon.simulator import FaultAction, FaultPlan, Simulator
from daemon.sync import Engine

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIST = "*/sales-invoice/list.do"
ITEMS = "*/item/list.do"


@dataclass
class Synced:
    sim: Simulator
    engine: Engine
    cursor: str  # the sales-invoice cursor once in sync

    async def cursor_now(self) -> str | None:
        return (await self.engine.state.cursors()).get("sales_invoice")

    async def poll(self, fault: FaultPlan | None = None) -> LogEvents:
        """Install `fault`, forget earlier requests, poll once; the log events."""
        if fault is not None:
            self.sim.install_faults(fault)
        self.sim.requests.reset()
        with capture_logs() as logs:
            await self.engine.poll()
        return logs

    def heal(self) -> None:
        self.sim.install_faults(FaultPlan())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Simulator, Engine]]:
    """One simulator and engine for the module: one retry per call, one-second
    deadlines and a two-second Retry-After cap keep the failures short."""
    accurate = {"timeout": "1s", "max_retries": 1, "retry_after_max": "2s"}
    async with shared_engine(tmp_path_factory.mktemp("net"), accurate=accurate) as pair:
        yield pair


@pytest_asyncio.fixture(loop_scope="module")
async def synced(shared: tuple[Simulator, Engine]) -> Synced:
    """The shared engine in sync, without faults, its request log empty."""
    sim, engine = shared
    await back_in_sync(sim, engine)
    cursor = (await engine.state.cursors())["sales_invoice"]
    return Synced(sim, engine, cursor)


def statuses(sim: Simulator, endpoint: str) -> list[int | None]:
    return [e.status for e in requests_to(sim, "accurate", endpoint)]


async def assert_caught_up(s: Synced, stamp: str) -> None:
    assert mismatches(s.sim) == {}
    assert await s.cursor_now() == stamp


# --- 429 and Retry-After -------------------------------------------------------


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_429_holds_every_request_for_retry_after(
    synced: Synced, form: str
) -> None:
    """After a 429 with Retry-After: 1 (either form) nothing reaches Accurate
    for 1 s; the retry then succeeds and the poll completes."""
    stamp = sell(synced.sim)
    action = FaultAction("status", status=429, retry_after=1, retry_after_form=form)  # type: ignore[arg-type]

    logs = await synced.poll(plan(action, endpoint=ITEMS, count=1))

    every = requests_to(synced.sim, "accurate")
    limited = [e for e in every if e.status == 429]
    assert len(limited) == 1
    assert gap_after(every, limited[0]) >= 1.0
    retries = events(logs, "http_retry")
    assert [(r["endpoint"], r["attempt"]) for r in retries] == [("item/list.do", 1)]
    # An HTTP-date has whole seconds; the simulator rounds it up.
    assert 1.0 <= retries[0]["wait_s"] <= 2.2
    await assert_caught_up(synced, stamp)


async def test_retry_after_is_capped_with_jitter(synced: Synced) -> None:
    """Retry-After: 30 is cut to accurate.retry_after_max (2 s here), plus at
    most 10 % jitter."""
    stamp = sell(synced.sim)
    action = FaultAction("status", status=429, retry_after=30)

    logs = await synced.poll(plan(action, endpoint=ITEMS, count=1))

    every = requests_to(synced.sim, "accurate")
    limited = next(e for e in every if e.status == 429)
    assert 2.0 <= gap_after(every, limited) < 3.0
    (retry,) = events(logs, "http_retry")
    assert 2.0 <= retry["wait_s"] <= 2.2
    await assert_caught_up(synced, stamp)


# --- server errors and the transport -------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_error_is_retried(synced: Synced, status: int) -> None:
    """A 5xx is temporary: retried once with a logged attempt, then fine."""
    stamp = sell(synced.sim)

    logs = await synced.poll(
        plan(FaultAction("status", status=status), endpoint=LIST, count=1)
    )

    assert statuses(synced.sim, LIST) == [status, 200]
    (retry,) = events(logs, "http_retry")
    assert (retry["endpoint"], retry["attempt"]) == ("sales-invoice/list.do", 1)
    assert 0.0 <= retry["wait_s"] <= 1.0
    await assert_caught_up(synced, stamp)


async def test_connection_reset_is_retried(synced: Synced) -> None:
    """A reset connection is retried on a fresh one."""
    stamp = sell(synced.sim)

    logs = await synced.poll(plan(FaultAction("reset"), endpoint=LIST, count=1))

    assert statuses(synced.sim, LIST) == [None, 200]
    (retry,) = events(logs, "http_retry")
    assert "network error" in retry["reason"]
    await assert_caught_up(synced, stamp)


async def test_answer_that_never_comes_times_out(synced: Synced) -> None:
    """A request without an answer ends at the read deadline (1 s), not never,
    and is retried."""
    stamp = sell(synced.sim)

    logs = await synced.poll(plan(FaultAction("hang"), endpoint=LIST, count=1))

    hung, ok = requests_to(synced.sim, "accurate", LIST)
    assert (hung.status, ok.status) == (None, 200)
    assert hung.ended is not None
    # The client's clock starts when it has sent; the simulator's on arrival.
    assert 0.95 <= hung.ended - hung.arrived < 1.5
    (retry,) = events(logs, "http_retry")
    assert "timeout (ReadTimeout)" in retry["reason"]
    await assert_caught_up(synced, stamp)


async def test_slow_answer_is_waited_for(synced: Synced) -> None:
    """An answer slower than usual but inside the deadline is simply used."""
    stamp = sell(synced.sim)

    logs = await synced.poll(
        plan(FaultAction("delay", seconds=0.6), endpoint=LIST, count=1)
    )

    (slow,) = requests_to(synced.sim, "accurate", LIST)
    assert slow.status == 200
    assert slow.ended is not None
    assert slow.ended - slow.arrived >= 0.6
    assert events(logs, "http_retry") == []
    await assert_caught_up(synced, stamp)


# --- malformed answers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "attempts", "named"),
    [
        (FaultAction("truncate"), 2, "network error (RemoteProtocolError)"),
        (FaultAction("non_json"), 1, "body is not a JSON object"),
        (
            FaultAction("status", status=200, body='{"s": true, "d": []}'),
            1,
            "field sp is not an object",
        ),
    ],
    ids=["truncated", "non-json", "missing-field"],
)
async def test_malformed_list_holds_the_cursor(
    synced: Synced, action: FaultAction, attempts: int, named: str
) -> None:
    """A list page that is cut short, not JSON or missing a field fails that
    kind's poll with an error naming the endpoint and what is wrong; the cursor
    stays put and the next healthy poll catches up."""
    stamp = sell(synced.sim)

    logs = await synced.poll(plan(action, endpoint=LIST))

    assert len(statuses(synced.sim, LIST)) == attempts
    (failed,) = events(logs, "poll_kind_failed")
    assert f"accurate sales-invoice/list.do: {named}" in failed["error"]
    assert await synced.cursor_now() == synced.cursor
    assert ("SKU-001", 1) in mismatches(synced.sim)

    synced.heal()
    await synced.poll()
    await assert_caught_up(synced, stamp)


async def test_malformed_detail_holds_the_cursor(synced: Synced) -> None:
    """A document detail without `d` fails the kind, never the poll or the
    daemon; the cursor waits for a readable answer."""
    stamp = sell(synced.sim)
    broken = FaultAction("status", status=200, body='{"s": true}')

    logs = await synced.poll(plan(broken, endpoint="*/sales-invoice/detail.do"))

    (failed,) = events(logs, "poll_kind_failed")
    assert "sales-invoice/detail.do: field d is not an object" in failed["error"]
    assert await synced.cursor_now() == synced.cursor

    synced.heal()
    await synced.poll()
    await assert_caught_up(synced, stamp)


# --- s:false at HTTP 200 ------------------------------------------------------------


async def test_s_false_too_many_requests_is_retried(synced: Synced) -> None:
    """`Terlalu banyak permintaan` at HTTP 200 is a rate limit: retried."""
    stamp = sell(synced.sim)

    logs = await synced.poll(
        plan(FaultAction("accurate_error"), endpoint=LIST, count=1)
    )

    assert statuses(synced.sim, LIST) == [200, 200]
    (retry,) = events(logs, "http_retry")
    assert "Terlalu banyak permintaan" in retry["reason"]
    await assert_caught_up(synced, stamp)


async def test_s_false_validation_error_is_not_retried(synced: Synced) -> None:
    """A permanent `s:false` is sent once per poll, never retried, and logged
    once (not once per poll) with what to do; the cursor holds meanwhile."""
    stamp = sell(synced.sim)
    invalid = FaultAction("accurate_error", text="Barang & Jasa tidak tepat")
    synced.sim.install_faults(plan(invalid, endpoint=LIST))
    synced.sim.requests.reset()

    with capture_logs() as logs:
        await synced.engine.poll()
        await synced.engine.poll()

    (refused,) = events(logs, "accurate_request_refused")
    assert refused["endpoint"] == "sales-invoice/list.do"
    assert "Barang & Jasa tidak tepat" in refused["error"]
    assert refused["action"]
    assert events(logs, "http_retry") == []
    assert synced.sim.requests.count("accurate", LIST) == 2
    assert await synced.cursor_now() == synced.cursor

    synced.heal()
    await synced.poll()
    await assert_caught_up(synced, stamp)
