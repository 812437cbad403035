"""Helpers for the operator tests: config files, the CLI, the engine.

The CLI runs as an operator runs it, through `daemon.cli.main` against a
config file and a real state file; the engine is the production engine
against the simulator. Commands use `anyio.run`, so the tests that call them
are synchronous and run the engine through `with_engine`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
import structlog
import yaml
from harness import fast_sim_config, settings_dict

from daemon.cli import main
from daemon.config import Settings, load_settings
from daemon.service import open_engine
from daemon.simulator.app import Simulator
from daemon.simulator.config import ItemSpec, SimConfig
from daemon.sync import Engine

T = TypeVar("T")


def write_config(
    sim: Simulator,
    tmp_path: Path,
    *,
    warehouses: list[dict[str, Any]] | None = None,
    stock_rules: dict[str, Any] | None = None,
    **sync: Any,
) -> Path:
    """A config file for the simulator, optionally with other warehouses
    and stock rules; the state file sits beside it."""
    raw = settings_dict(sim, tmp_path / "state.sqlite3", **sync)
    if warehouses is not None:
        raw["warehouses"] = warehouses
    if stock_rules is not None:
        raw["stock_rules"] = stock_rules
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def settings_of(config: Path) -> Settings:
    return load_settings(config, environ={})


def with_engine(
    config: Path,
    work: Callable[[Engine], Awaitable[T]],
    *,
    dry_run: bool | None = None,
) -> T:
    """Open the engine on the config's state, prepare it, run `work`."""

    async def body() -> T:
        async with open_engine(settings_of(config), dry_run=dry_run) as engine:
            await engine.prepare()
            return await work(engine)

    return anyio.run(body)


def full_sync(config: Path, *, dry_run: bool | None = None) -> None:
    async def work(engine: Engine) -> None:
        await engine.full_sync("test")

    with_engine(config, work, dry_run=dry_run)


def poll(config: Path) -> None:
    async def work(engine: Engine) -> None:
        await engine.poll()

    with_engine(config, work)


def cli(
    capsys: pytest.CaptureFixture[str], config: Path, *args: str
) -> tuple[int, str, str]:
    """Run `stocksync ARGS --config CONFIG`: exit status, stdout, stderr."""
    capsys.readouterr()
    # The CLI sets up logging for the whole process, onto the captured
    # stderr; put back what the other tests log through.
    saved = structlog.get_config()
    try:
        code = main([*args, "--config", str(config)])
    finally:
        structlog.configure(**saved)
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(
    capsys: pytest.CaptureFixture[str], config: Path, *args: str
) -> dict[str, Any]:
    code, out, err = cli(capsys, config, *args, "--json")
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def forstok_quantity_requests(sim: Simulator) -> int:
    return sim.requests.count("forstok", "*/quantities.json")


def item(no: str, gdg1: int = 0, gdg2: int = 0, **spec: Any) -> ItemSpec:
    """An Accurate item with opening stock in GDG-1 and GDG-2."""
    opening = {w: Decimal(q) for w, q in (("GDG-1", gdg1), ("GDG-2", gdg2)) if q}
    return ItemSpec(no, opening=opening, **spec)


def shop(*items: ItemSpec, forstok: Iterable[str] = ()) -> SimConfig:
    """A simulator with these items; `forstok` lists the only SKUs Forstok
    knows (others are answered "variant not found"), or any if empty."""
    config = fast_sim_config(items=0)
    config.catalogue.items = list(items)
    config.catalogue.forstok_products = {
        sku: [n] for n, sku in enumerate(forstok, start=1)
    }
    return config


@contextmanager
def running(config: SimConfig) -> Iterator[Simulator]:
    simulator = Simulator(config)
    simulator.start_in_thread()
    try:
        yield simulator
    finally:
        simulator.stop()


def on_hand(sim: Simulator, warehouse: int) -> dict[str, int]:
    """What Forstok holds in one warehouse, by SKU."""
    return {
        sku: quantity
        for (sku, wh), quantity in sim.forstok.on_hand_snapshot().items()
        if wh == warehouse
    }
