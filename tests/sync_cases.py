"""Helpers for the sync-guarantee tests: case catalogues, engines, held requests.

The cases in `../shared/cases/` are written with small named items (`A@GDG-1 =
10`) and `lastUpdate` values on 1 February 2026, WIB. A case catalogue holds
exactly those items, and the simulator's business clock is a manual clock on
that morning, so a test decides when a late document becomes visible.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
from harness import Harness, settings_dict

from daemon.config import parse_settings
from daemon.service import open_engine
from daemon.simulator.accurate import LineSpec
from daemon.simulator.app import Simulator
from daemon.simulator.clock import ManualClock
from daemon.simulator.config import ItemSpec, SimConfig
from daemon.simulator.documents import Document
from daemon.simulator.observe import Trigger

CASE_MORNING = datetime(2026, 2, 1, 2, 0, tzinfo=UTC)
"""09:00 WIB on 1 February 2026, before every `lastUpdate` in the cases."""

Stock = Mapping[str, Mapping[str, int] | int]
"""Item number to its stock: one number for GDG-1, or per warehouse."""


def case_config(stock: Stock) -> SimConfig:
    """A catalogue of exactly these items, on a manual business clock."""
    config = SimConfig(seed=3, clock=ManualClock(CASE_MORNING))
    config.accurate.rate_per_second = 400
    config.forstok.requests_per_minute = 60_000
    config.forstok.max_in_flight = 8
    config.catalogue.items = [
        ItemSpec(no, opening=_opening(levels)) for no, levels in stock.items()
    ]
    return config


def _opening(levels: Mapping[str, int] | int) -> dict[str, Decimal]:
    if isinstance(levels, int):
        levels = {"GDG-1": levels}
    return {warehouse: Decimal(n) for warehouse, n in levels.items() if n}


def clock_of(sim: Simulator) -> ManualClock:
    clock = sim.config.clock
    assert isinstance(clock, ManualClock)
    return clock


def wib(text: str) -> datetime:
    """A WIB wall-clock time (`dd/MM/yyyy HH:mm:ss`) as an aware instant."""
    moment = datetime.strptime(text, "%d/%m/%Y %H:%M:%S")  # noqa: DTZ007  WIB below
    return moment.replace(tzinfo=ZoneInfo("Asia/Jakarta"))


def sell(
    sim: Simulator,
    number: str,
    item: str,
    quantity: float,
    at: str | None,
    *,
    warehouse: str = "GDG-1",
    visible_in_s: float | None = None,
) -> Document:
    """A sales invoice taking `quantity` of `item` out of `warehouse`."""
    return sim.accurate.create_document(
        "sales-invoice",
        [LineSpec(item, quantity, warehouse)],
        number=number,
        last_update=at,
        visible_in_s=visible_in_s,
    )


def on_hand(sim: Simulator, sku: str, warehouse: int = 1) -> int | None:
    return sim.forstok.on_hand(sku, warehouse)


def pushes_of(sim: Simulator, sku: str, warehouse: int = 1) -> list[int]:
    """The quantities Forstok accepted for one pair, oldest first."""
    return [p.new for p in sim.forstok.history_of(sku) if p.warehouse_id == warehouse]


def forstok_requests(sim: Simulator) -> int:
    return sim.requests.count("forstok")


@asynccontextmanager
async def engine_for(
    sim: Simulator,
    tmp_path: Path,
    *,
    warehouses: dict[str, int] | None = None,
    page_size: int | None = None,
    forstok: Mapping[str, Any] | None = None,
    **sync: Any,
) -> AsyncIterator[Harness]:
    """The real engine on `tmp_path/state.sqlite3`; opening it again on the
    same folder is a restart: only what the state file holds carries over."""
    raw = settings_dict(sim, tmp_path / "state.sqlite3", warehouses, **sync)
    if page_size is not None:
        raw["accurate"]["page_size"] = page_size
    raw["forstok"].update(forstok or {})
    settings = parse_settings(raw, {})
    async with open_engine(settings) as engine:
        await engine.prepare()
        yield Harness(sim, settings, engine)


async def settle(h: Harness) -> None:
    """A new state's first full sync, then a poll that starts the cursors."""
    await h.engine.full_sync("test")
    await h.engine.poll()


async def cursor_of(h: Harness, kind: str = "sales_invoice") -> str | None:
    return (await h.engine.state.cursors()).get(kind)


async def wait_for(trigger: Trigger, limit_s: float = 10.0) -> None:
    """Block (in a worker thread) until the trigger's request has arrived."""
    fired = await anyio.to_thread.run_sync(trigger.wait, limit_s)
    assert fired, f"no request matched {trigger.endpoint} #{trigger.nth}"


async def eventually(condition: Callable[[], bool], limit_s: float = 10.0) -> None:
    """Wait until `condition()` holds, checking every 20 ms."""
    for _ in range(int(limit_s / 0.02)):
        if condition():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"still false after {limit_s} s")


async def while_held(
    trigger: Trigger, work: Awaitable[Any], meanwhile: Callable[[], None]
) -> None:
    """Run `work`; when the trigger's request is held, run `meanwhile`, then
    let the request go on."""
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            await work

        tg.start_soon(run)
        await wait_for(trigger)
        meanwhile()
        trigger.release()


def state_rows(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """Rows from the state file, read as an operator's tool would."""
    with sqlite3.connect(path, timeout=10) as db:
        return list(db.execute(sql, args).fetchall())


def cursors_in(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return dict(state_rows(path, "SELECT kind, last_update FROM cursor"))
