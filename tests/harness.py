"""End-to-end fixtures: the simulator over loopback, a real state file, settings.

Tests fake only the outermost boundary. The daemon's own code runs as it
does in production, against the simulator served on 127.0.0.1.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import Settings, parse_settings
from daemon.service import open_engine
from daemon.simulator.app import Simulator
from daemon.simulator.config import (
    AccurateConfig,
    ForstokConfig,
    ItemSpec,
    SimConfig,
)
from daemon.sync import Engine

# The daemon as a subprocess: the `daemons` fixture and its helpers.
pytest_plugins = ("daemon_support",)

WAREHOUSES = {"GDG-1": 1, "GDG-2": 2}
"""Accurate warehouse -> Forstok warehouse; GDG-3 exists but is not mapped."""

TEST_SECRETS = ("sim-accurate-api-token", "sim-accurate-signature-secret")

SCANNED_SECRETS = (
    AccurateConfig.api_token,
    AccurateConfig.signature_secret,
    AccurateConfig.oauth_client_secret,
    ForstokConfig.secret_key,
    # Wrong credentials that tests hand to the daemon: refused, never shown.
    "wrong-accurate-token-4f1c9a",
    "wrong-forstok-secret-7d2e5b",
)
"""Secrets that must never appear in any test's captured output."""


def fast_sim_config(items: int = 6, **catalogue: Any) -> SimConfig:
    """A small catalogue with opening stock, and no artificial latency."""
    config = SimConfig(seed=7)
    # Fast limits keep the suite quick; tests about limits set their own.
    config.accurate.rate_per_second = 400
    config.catalogue.items = [
        ItemSpec(
            f"SKU-{n:03d}",
            opening={
                "GDG-1": Decimal(10 + n),
                "GDG-2": Decimal(5),
                "GDG-3": Decimal(3),
            },
        )
        for n in range(1, items + 1)
    ]
    for key, value in catalogue.items():
        setattr(config.catalogue, key, value)
    return config


def settings_dict(
    sim: Simulator,
    state_path: Path,
    warehouses: dict[str, int] | None = None,
    **sync: Any,
) -> dict[str, Any]:
    """Daemon settings for the simulator; `warehouses` maps Accurate
    warehouse names to Forstok ids (default `WAREHOUSES`)."""
    mapping = WAREHOUSES if warehouses is None else warehouses
    accurate = sim.config.accurate
    forstok = sim.config.forstok
    return {
        "accurate": {
            "account_url": sim.accurate_account_url,
            "api_token": accurate.api_token,
            "signature_secret": accurate.signature_secret,
            "page_size": 5,
            "requests_per_second": sim.config.accurate.rate_per_second,
            "retry_after_max": "5s",
        },
        "forstok": {
            "auth_url": sim.forstok_auth_url,
            "quantity_url": sim.forstok_quantity_url,
            "user_id": forstok.seller_id,
            "secret_key": forstok.secret_key,
            "requests_per_minute": 6000,
        },
        "warehouses": [
            {"accurate": name, "forstok_id": fid} for name, fid in mapping.items()
        ],
        "sync": {"poll_interval": "1s", "lookback": "5m", **sync},
        "state_path": str(state_path),
        "log": {"level": "debug", "format": "json"},
    }


def make_settings(
    sim: Simulator,
    tmp_path: Path,
    warehouses: dict[str, int] | None = None,
    **sync: Any,
) -> Settings:
    raw = settings_dict(sim, tmp_path / "state.sqlite3", warehouses, **sync)
    return parse_settings(raw, {})


def write_config(
    sim: Simulator,
    tmp_path: Path,
    warehouses: dict[str, int] | None = None,
    **sync: Any,
) -> Path:
    path = tmp_path / "config.yaml"
    raw = settings_dict(sim, tmp_path / "state.sqlite3", warehouses, **sync)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def expected_forstok(
    sim: Simulator, warehouses: dict[str, int] | None = None
) -> dict[tuple[str, int], int]:
    """What Forstok should hold, computed here independently of the daemon:
    per SKU and Forstok warehouse, the sum of its Accurate warehouses,
    negative totals as 0, rounded down to whole units."""
    mapping = WAREHOUSES if warehouses is None else warehouses
    totals: dict[tuple[str, int], Decimal] = {}
    for (item_no, warehouse), quantity in sim.accurate.stock_snapshot().items():
        if warehouse in mapping:
            key = (item_no, mapping[warehouse])
            totals[key] = totals.get(key, Decimal(0)) + quantity
    return {
        key: int(max(total, Decimal(0)).to_integral_value(rounding=ROUND_FLOOR))
        for key, total in totals.items()
        if _item_is_synced(sim, key[0])
    }


def _item_is_synced(sim: Simulator, item_no: str) -> bool:
    item = sim.accurate.item_by_no(item_no)
    return item.item_type == "INVENTORY" and not item.suspended


def mismatches(
    sim: Simulator, warehouses: dict[str, int] | None = None
) -> dict[tuple[str, int], tuple[int, int | None]]:
    """Pairs where Forstok differs from Accurate: expected, actual."""
    actual = sim.forstok.on_hand_snapshot()
    return {
        key: (want, actual.get(key))
        for key, want in expected_forstok(sim, warehouses).items()
        if actual.get(key) != want
    }


@dataclass
class Harness:
    sim: Simulator
    settings: Settings
    engine: Engine


@pytest.fixture
def sim_config() -> SimConfig:
    return fast_sim_config()


@pytest.fixture
def sim(sim_config: SimConfig) -> Iterator[Simulator]:
    """The simulator on its own thread and event loop, as a remote service is:
    nothing the test's loop does can stall it."""
    simulator = Simulator(sim_config)
    simulator.start_in_thread()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
async def harness(sim: Simulator, tmp_path: Path) -> AsyncIterator[Harness]:
    """The real engine on a real state file, against the simulator."""
    settings = make_settings(sim, tmp_path)
    async with open_engine(settings) as engine:
        await engine.prepare()
        yield Harness(sim, settings, engine)


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Long chaos runs (`@pytest.mark.slow`) run only with STOCKSYNC_SLOW=1."""
    if os.environ.get("STOCKSYNC_SLOW") == "1":
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item not in slow]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Fail any test whose captured output shows a test secret.

    Every test's stdout, stderr and stdlib log records are searched, in
    each phase, for the secrets the simulator accepts and the wrong ones
    tests hand out. Daemon subprocesses started through the `daemons`
    fixture print their whole output into the test's capture, so it is
    searched too. Output a test takes with `capsys` is not.
    """
    report: pytest.TestReport = yield
    leaks = sorted(
        {
            f"{title}: {secret[:4]}…"
            for title, text in report.sections
            if title.endswith(f" {report.when}")
            for secret in SCANNED_SECRETS
            if secret in text
        }
    )
    if leaks and not report.failed:
        report.outcome = "failed"
        report.longrepr = "a test secret appears in captured output:\n  " + (
            "\n  ".join(leaks)
        )
    return report
