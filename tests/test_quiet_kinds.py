"""A kind that goes quiet costs nothing, however long it stays quiet.

A quiet kind's cursor stays at its newest document, which each poll lists
again (its window starts a lookback before the cursor). The full sync
forgot documents last changed more than 35 days ago, that one included, so
from then on every poll took it for new: a detail read, a stock read and a
`documents_found` line, for as long as the kind stayed quiet. Items went
the same way. The simulator's documents here are dated 01/02/2026, far
more than 35 days before the daemon's real clock, so one full sync shows it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from sync_cases import case_config, engine_for, sell, settle

from daemon.simulator.app import Simulator
from daemon.simulator.config import SimConfig


@pytest.fixture
def sim_config() -> SimConfig:
    return case_config({"A": 10})


def reads(sim: Simulator) -> tuple[int, int]:
    return (
        sim.requests.count("accurate", "*/sales-invoice/detail.do"),
        sim.requests.count("accurate", "*/item/detail.do"),
    )


async def test_an_old_quiet_document_is_not_read_again_after_a_full_sync(
    sim: Simulator, tmp_path: Path
) -> None:
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-1", "A", 1, "01/02/2026 10:00:00")
        await h.engine.poll()
        before = reads(sim)

        with structlog.testing.capture_logs() as logs:
            await h.engine.full_sync("scheduled")
            for _ in range(3):
                await h.engine.poll()

        assert reads(sim) == before
        assert not [e for e in logs if e["event"] == "documents_found"]
        polls = [e["log_level"] for e in logs if e["event"] == "poll_finished"]
        assert polls == ["debug"] * 3, "an idle poll is silent at info level"
