"""A push waits for Forstok's turn before it takes rows from the queue.

Against the simulator over loopback and a real state file, with Forstok paced
at 40 requests a minute (1.5 s apart): rows queued while a push waits for its
turn go out in that request, not one turn later.
"""

from __future__ import annotations

from pathlib import Path

import anyio
from harness import mismatches, settings_dict

from daemon.config import parse_settings
from daemon.service import open_engine
from daemon.simulator.accurate import LineSpec
from daemon.simulator.app import Simulator

QUANTITIES = "*quantities*"


async def test_rows_queued_during_the_wait_for_a_turn_go_with_it(
    sim: Simulator, tmp_path: Path
) -> None:
    raw = settings_dict(sim, tmp_path / "state.sqlite3")
    raw["forstok"]["requests_per_minute"] = 40
    settings = parse_settings(raw, {})
    model = sim.accurate
    async with open_engine(settings) as engine:
        await engine.prepare()
        await engine.full_sync()
        model.create_document("item-adjustment", [LineSpec("SKU-001", 1, "GDG-1")])
        await engine.poll()
        before = sim.requests.count("forstok", QUANTITIES)

        model.create_document("item-adjustment", [LineSpec("SKU-002", 1, "GDG-1")])
        await engine.poll(push=False)
        async with anyio.create_task_group() as tg:
            # The last request left just now: this push waits 1.5 s.
            tg.start_soon(engine.push)
            await anyio.sleep(0.3)
            model.create_document("item-adjustment", [LineSpec("SKU-003", 1, "GDG-1")])
            await engine.poll(push=False)

        assert sim.requests.count("forstok", QUANTITIES) - before == 1
        assert mismatches(sim) == {}
