"""Accurate failing in the middle of concurrent reads.

The engine reads document details, item balances and stock pages several at
a time. When one of them fails, the caller (the daemon's poll and full-sync
loops) must get the service error itself, which it logs and retries, not a
group of errors it does not know, which would stop the daemon; and nothing
half-read may move a cursor or leave a queue.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import mismatches
from sync_cases import case_config, cursor_of, engine_for, on_hand, sell, settle

from daemon.errors import ServiceError
from daemon.simulator.app import Simulator
from daemon.simulator.config import SimConfig
from daemon.simulator.faults import FaultAction, FaultPlan, FaultRule


@pytest.fixture
def sim_config() -> SimConfig:
    return case_config({f"K{n:02d}": 10 for n in range(1, 13)})


REFUSED = FaultAction("accurate_error", text="Barang & Jasa tidak tepat")
"""An answer Accurate gives at HTTP 200 that no retry can change."""


def failing(endpoint: str, after: int = 0) -> FaultPlan:
    """Requests to `endpoint`, after the first `after`, are refused."""
    return FaultPlan([FaultRule(REFUSED, "accurate", endpoint, after=after)])


async def test_document_reads_failing_hold_the_cursor_and_end_the_poll_cleanly(
    sim: Simulator, tmp_path: Path
) -> None:
    """Details of two new invoices cannot be read: the poll ends normally with
    an error counted, the cursor stays, and the next poll catches up."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-1", "K01", 1, "01/02/2026 10:00:00")
        await h.engine.poll()
        sell(sim, "SI-2", "K02", 1, "01/02/2026 10:01:00")
        sell(sim, "SI-3", "K03", 1, "01/02/2026 10:02:00")
        sim.install_faults(failing("*/sales-invoice/detail.do"))

        counts = await h.engine.poll()

        assert counts.errors == 1
        assert await cursor_of(h) == "01/02/2026 10:00:00"
        sim.install_faults(FaultPlan())
        await h.engine.poll()
        assert mismatches(sim) == {}


async def test_stock_reads_failing_in_a_refresh_raise_a_service_error(
    sim: Simulator, tmp_path: Path
) -> None:
    """Item balances cannot be read: the poll raises the service error, the
    pairs stay queued, and the next poll pushes them."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        for n in range(1, 4):
            sell(sim, f"SI-{n}", f"K{n:02d}", 1, "01/02/2026 10:00:00")
        sim.install_faults(failing("*/item/detail.do"))

        with pytest.raises(ServiceError):
            await h.engine.poll()

        assert await h.engine.state.count("pending_pair") == 3
        sim.install_faults(FaultPlan())
        await h.engine.poll()
        assert (on_hand(sim, "K01"), on_hand(sim, "K03")) == (9, 9)
        assert mismatches(sim) == {}


async def test_stock_list_failing_in_a_full_sync_raises_a_service_error(
    sim: Simulator, tmp_path: Path
) -> None:
    """A stock page of a full sync cannot be read: the full sync raises the
    service error and is recorded as failed, so the daemon runs it again."""
    async with engine_for(sim, tmp_path) as h:
        sim.install_faults(failing("*/item/list-stock.do", after=1))

        with pytest.raises(ServiceError):
            await h.engine.full_sync("test")

        last = (await h.engine.state.last_runs())["full_sync"]
        assert last["outcome"] == "failed"
        sim.install_faults(FaultPlan())
        await h.engine.full_sync("test")
        assert mismatches(sim) == {}
