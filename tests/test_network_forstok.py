"""The Forstok client rides out each fault of the plan, end to end.

The engine is in sync, then one sale changes SKU-001 in Accurate; the push
that follows meets one fault. Each test checks the final Forstok quantities
and what the simulated Forstok received.
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

from daemon.simulator import FaultAction, Simulator
from daemon.sync import Engine

pytestmark = pytest.mark.asyncio(loop_scope="module")

PUSH = "/api/v2/variants/quantities.json"
AUTH = "/api/v2/auth"


@dataclass
class Synced:
    sim: Simulator
    engine: Engine

    async def poll_after_sale(
        self, action: FaultAction | None, **window: int
    ) -> LogEvents:
        """Sell SKU-001, make the next push meet `action`, poll once."""
        sell(self.sim)
        if action is not None:
            self.sim.install_faults(plan(action, "forstok", PUSH, **window))
        self.sim.requests.reset()
        with capture_logs() as logs:
            await self.engine.poll()
        return logs

    def push_statuses(self) -> list[int | None]:
        return [e.status for e in requests_to(self.sim, "forstok", PUSH)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Simulator, Engine]]:
    """One simulator and engine for the module, with one retry and one-second
    deadlines to Forstok."""
    forstok = {"timeout": "1s", "max_retries": 1, "retry_after_max": "5s"}
    async with shared_engine(tmp_path_factory.mktemp("net"), forstok=forstok) as pair:
        yield pair


@pytest_asyncio.fixture(loop_scope="module")
async def synced(shared: tuple[Simulator, Engine]) -> Synced:
    """The shared engine in sync, without faults, its request log empty."""
    await back_in_sync(*shared)
    return Synced(*shared)


async def test_429_mid_run_waits_retry_after(synced: Synced) -> None:
    """C22: after Forstok's 429 with Retry-After: 2 the next request to
    Forstok comes 2 s later at the earliest, and the push lands."""
    limited = FaultAction("status", status=429, retry_after=2)

    logs = await synced.poll_after_sale(limited, count=1)

    every = synced.sim.requests.entries("forstok")
    refused = next(e for e in every if e.status == 429)
    assert gap_after(every, refused) >= 2.0
    assert synced.push_statuses() == [429, 200]
    (retry,) = events(logs, "http_retry")
    assert (retry["service"], retry["attempt"]) == ("forstok", 1)
    assert mismatches(synced.sim) == {}


@pytest.mark.parametrize(
    "action",
    [
        FaultAction("status", status=500),
        FaultAction("status", status=502),
        FaultAction("status", status=503),
        FaultAction("status", status=504),
        FaultAction("reset"),
        FaultAction("hang"),
        FaultAction("non_json"),
        FaultAction("truncate"),
    ],
    ids=["500", "502", "503", "504", "reset", "hang", "non-json", "truncated"],
)
async def test_temporary_failure_is_retried_with_the_same_values(
    synced: Synced, action: FaultAction
) -> None:
    """A server error, a reset, no answer (1 s deadline) or an unreadable
    answer leaves the outcome unknown: the same absolute values are sent
    again, once, and land."""
    logs = await synced.poll_after_sale(action, count=1)

    assert len(synced.push_statuses()) == 2
    assert synced.push_statuses()[-1] == 200
    (retry,) = events(logs, "http_retry")
    assert retry["endpoint"] == "variants/quantities"
    assert mismatches(synced.sim) == {}


async def test_slow_push_is_waited_for(synced: Synced) -> None:
    """A push answered late but inside the deadline is not sent twice."""
    logs = await synced.poll_after_sale(FaultAction("delay", seconds=0.6))

    assert synced.push_statuses() == [200]
    assert events(logs, "http_retry") == []
    assert mismatches(synced.sim) == {}


async def test_expired_token_is_renewed_once(synced: Synced) -> None:
    """A token Forstok stopped accepting costs one 401 and one new token."""
    synced.sim.forstok.expire_tokens()

    await synced.poll_after_sale(None)

    assert synced.push_statuses() == [401, 200]
    assert synced.sim.requests.count("forstok", AUTH) == 1
    assert mismatches(synced.sim) == {}


async def test_one_rejected_row_leaves_the_batch_applied(synced: Synced) -> None:
    """Forstok refusing SKU-002 in a batch of two applies SKU-001 in the
    same request; SKU-002 is reported with Forstok's reason and waits."""
    sell(synced.sim, item="SKU-002")
    rejected = FaultAction("reject_sku", sku="SKU-002", message="variant locked")

    logs = await synced.poll_after_sale(rejected)

    assert synced.push_statuses() == [200]
    assert set(mismatches(synced.sim)) == {("SKU-002", 1)}
    (row,) = events(logs, "forstok_row_rejected")
    assert (row["sku"], row["reason"]) == ("SKU-002", "variant locked")
    assert [e["sku"] for e in events(logs, "push_rejected")] == ["SKU-002"]
