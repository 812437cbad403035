"""One run of the time-zone fixture, for `test_tz_matrix.py` (case C07).

Run as `python tests/tz_scenario.py OUT.json` with `TZ` set: the zone must
apply to the whole process, which only a fresh process guarantees. For each
zone the simulated Accurate stamps `lastUpdate` in, the engine goes through
the same steps, and what Forstok was sent after each step is written to OUT.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
from harness import Harness
from sync_cases import (
    case_config,
    clock_of,
    cursor_of,
    engine_for,
    sell,
    settle,
    wib,
)

from daemon.simulator.accurate import LineSpec
from daemon.simulator.app import Simulator

SIM_ZONES = ("Asia/Jakarta", "America/Los_Angeles")
"""WIB as the reference assumes, and a zone fourteen hours behind it."""


def pushes(sim: Simulator) -> list[list[Any]]:
    """Every push so far as [SKU, warehouse, old, new], in a fixed order."""
    rows = [[p.sku, p.warehouse_id, p.old, p.new] for p in sim.forstok.history_of()]
    return sorted(rows, key=lambda row: [str(value) for value in row])


async def steps(h: Harness) -> list[dict[str, Any]]:
    """The C01 fixture, later documents, a late one inside the lookback, a
    transfer and a full sync, all stamped by Accurate's own clock in its
    zone; what Forstok was sent after each step."""
    sim, clock = h.sim, clock_of(h.sim)
    seen: list[dict[str, Any]] = []

    async def step(name: str) -> None:
        seen.append({"step": name, "pushes": pushes(sim)})

    await settle(h)
    await step("settled")
    clock.set(wib("01/02/2026 10:00:00"))
    sell(sim, "SI-1", "A", 1, None)
    await h.engine.poll()
    sell(sim, "SI-2", "B", 2, None)  # the same second, after the poll
    await h.engine.poll()
    await step("C01")

    clock.advance(1)
    sell(sim, "SI-3", "C", 1, None)
    await h.engine.poll()
    clock.advance(60)
    newest = sell(sim, "SI-4", "C", 2, None)
    await h.engine.poll()
    late = newest.last_update - timedelta(seconds=30)
    sell(sim, "SI-5", "A", 3, late.strftime("%d/%m/%Y %H:%M:%S"))
    await h.engine.poll()
    await step("later and late documents")

    sim.accurate.create_document(
        "item-transfer",
        [LineSpec("B", 1)],
        warehouse="GDG-1",
        reference_warehouse="GDG-2",
    )
    await h.engine.poll()
    await h.engine.full_sync("test")
    await step("transfer and full sync")
    seen.append({"cursor": await cursor_of(h)})
    return seen


async def run(sim_zone: str) -> list[dict[str, Any]]:
    config = case_config({"A": 10, "B": 6, "C": 10})
    config.accurate.zone = sim_zone
    sim = Simulator(config)
    sim.start_in_thread()
    try:
        with tempfile.TemporaryDirectory() as folder:
            async with engine_for(sim, Path(folder)) as h:
                return await steps(h)
    finally:
        sim.stop()


def main(out: Path) -> None:
    result = {
        "host_zone": time.tzname[0],
        "host_offset_s": datetime.now().astimezone().utcoffset().total_seconds(),  # type: ignore[union-attr]
        "runs": {zone: anyio.run(run, zone) for zone in SIM_ZONES},
    }
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
