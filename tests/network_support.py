"""Helpers for the network tests: settings, an engine, and the request log.

The daemon's own code runs unchanged against the simulator over loopback;
only the simulator misbehaves, as told by a fault plan. What the tests
measure (arrivals, gaps, statuses) comes from the simulator's request log,
never from the client's own counters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, MutableMapping
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import anyio
import httpx
import yaml
from harness import fast_sim_config, mismatches, settings_dict

from daemon.config import Settings, parse_settings
from daemon.service import open_engine
from daemon.simulator import (
    FaultAction,
    FaultPlan,
    FaultRule,
    LineSpec,
    SimConfig,
    Simulator,
)
from daemon.simulator.observe import LoggedRequest
from daemon.sync import Engine
from daemon.timefmt import format_last_update

LogEvents = list[MutableMapping[str, Any]]


def network_raw(
    sim: Simulator,
    tmp_path: Path,
    *,
    accurate: dict[str, Any] | None = None,
    forstok: dict[str, Any] | None = None,
    sync: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The harness settings with short deadlines, as a YAML-ready dict."""
    raw = settings_dict(sim, tmp_path / "state.sqlite3", **(sync or {}))
    defaults = {"timeout": "2s", "credential_retry_interval": "1s"}
    _merge(raw["accurate"], {**defaults, **(accurate or {})})
    _merge(raw["forstok"], {"timeout": "2s", **(forstok or {})})
    return raw


def _merge(section: dict[str, Any], changes: dict[str, Any]) -> None:
    """Set each key; a None value removes it."""
    for key, value in changes.items():
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value


def network_settings(sim: Simulator, tmp_path: Path, **sections: Any) -> Settings:
    return parse_settings(network_raw(sim, tmp_path, **sections), {})


@asynccontextmanager
async def engine_on(settings: Settings) -> AsyncIterator[Engine]:
    """The production engine on a real state file, warehouses and mapping read."""
    async with open_engine(settings) as engine:
        await engine.prepare()
        yield engine


async def in_sync(sim: Simulator, engine: Engine) -> None:
    """A full sync and one poll: Forstok equal to Accurate, every cursor set."""
    await engine.full_sync("test")
    await engine.poll()
    assert mismatches(sim) == {}


def sell(
    sim: Simulator, quantity: int = 2, item: str = "SKU-001", ago_s: float = 0.0
) -> str:
    """A sales invoice taking `quantity` of `item` out of GDG-1, stamped
    `ago_s` seconds ago; returns its lastUpdate."""
    stamp = sim.accurate.now_stamp() - timedelta(seconds=ago_s)
    line = LineSpec(item, quantity, "GDG-1")
    doc = sim.accurate.create_document("sales-invoice", [line], last_update=stamp)
    return format_last_update(doc.last_update)


def plan(
    action: FaultAction,
    service: str = "accurate",
    endpoint: str = "*",
    **window: Any,
) -> FaultPlan:
    """A plan of one rule."""
    return FaultPlan([FaultRule(action, service, endpoint, **window)])


def requests_to(
    sim: Simulator, service: str, endpoint: str = "*"
) -> list[LoggedRequest]:
    """Requests the simulator received, in arrival order; `endpoint` a glob."""
    return [
        e for e in sim.requests.entries(service) if fnmatchcase(e.endpoint, endpoint)
    ]


def gap_after(entries: Iterable[LoggedRequest], failed: LoggedRequest) -> float:
    """Seconds from the end of `failed` to the next arrival after it."""
    assert failed.ended is not None
    later = [e.arrived for e in entries if e.seq > failed.seq]
    assert later, "no request followed the failure"
    return min(later) - failed.ended


def events(logs: LogEvents, name: str) -> LogEvents:
    return [e for e in logs if e["event"] == name]


async def wait_until(condition: Callable[[], bool], within: float) -> None:
    """Poll `condition` until it holds; fail after `within` seconds."""
    with anyio.fail_after(within):
        # Polled: the condition reads the simulator's thread, no event to wait on.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.05)


async def authorize(sim: Simulator) -> tuple[str, str]:
    """An access and refresh token from the simulated account host, as the
    operator gets them once by authorising stocksync in a browser."""
    config = sim.config.accurate
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.post(
            sim.accurate_account_url + "/oauth/token",
            auth=(config.oauth_client_id, config.oauth_client_secret),
            data={"grant_type": "authorization_code", "code": "from-the-browser"},
        )
    body = answer.json()
    return body["access_token"], body["refresh_token"]


def oauth_section(sim: Simulator, access: str, refresh: str) -> dict[str, Any]:
    """`accurate:` settings for the OAuth method against the simulator."""
    config = sim.config.accurate
    return {
        "auth": "oauth",
        "api_token": None,
        "signature_secret": None,
        "oauth": {
            "client_id": config.oauth_client_id,
            "client_secret": config.oauth_client_secret,
            "access_token": access,
            "refresh_token": refresh,
            "database_id": config.database_id,
        },
    }


def network_config(sim: Simulator, tmp_path: Path, **sections: Any) -> Path:
    """A config file for a daemon process: `network_raw` settings, and a full
    sync only at start-up (its cron names a minute the suite never sees)."""
    raw = network_raw(sim, tmp_path, **sections)
    raw["sync"].setdefault("full_sync_cron", "0 0 1 1 *")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    path.chmod(0o600)
    return path


def roomy_sim_config() -> SimConfig:
    """The harness catalogue with 1000 of every item in GDG-1, so that a
    module of tests can keep selling without running stock down to zero
    (a zero hides whether a sale reached Forstok), and no Forstok limit."""
    config = fast_sim_config()
    for item in config.catalogue.items:
        item.opening["GDG-1"] = Decimal(1000)
    # Forstok's own 50 a minute would hold a module of tests up for minutes.
    config.forstok.requests_per_minute = 0
    return config


@asynccontextmanager
async def shared_engine(
    tmp_path: Path, **sections: Any
) -> AsyncIterator[tuple[Simulator, Engine]]:
    """A simulator and an engine in sync, for a whole module of tests; pages
    of 100 rows keep the module's growing list of sales on one page."""
    sim = Simulator(roomy_sim_config())
    sim.start_in_thread()
    accurate = {"page_size": 100, **sections.pop("accurate", {})}
    try:
        settings = network_settings(sim, tmp_path, accurate=accurate, **sections)
        async with engine_on(settings) as engine:
            sell(sim, 1, ago_s=60)
            await in_sync(sim, engine)
            yield sim, engine
    finally:
        sim.stop()


async def back_in_sync(sim: Simulator, engine: Engine) -> None:
    """Undo what an earlier test of the module left: faults, log, drift."""
    sim.install_faults(FaultPlan())
    if mismatches(sim):
        await engine.full_sync("test reset")
    sim.requests.reset()
