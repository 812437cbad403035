"""`stocksync demo`: the real daemon against the simulator, for about a minute.

The simulator runs in this process on loopback; the daemon runs as its own
process, exactly as systemd would start it, with a fresh state file. A
simulated merchant does business (every document kind, transfers between
warehouses, a deleted invoice), the demo sends SIGHUP for a full sync, and
finally compares every pair Forstok holds with Accurate's stock.

This module, and `stocksync simulate`, are the only production code that
imports the simulator.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import yaml

from daemon.simulator.app import Simulator
from daemon.simulator.business import Business, starter_catalogue
from daemon.simulator.config import SimConfig

BUSINESS_SECONDS = 45.0
POLL_INTERVAL_S = 3
ITEMS = 40
WAREHOUSES = {"GDG-1": 101, "GDG-2": 102, "GDG-3": 101}
"""GDG-1 and GDG-3 both feed Forstok warehouse 101, to show the sum rule."""


def run_demo(seconds: float = BUSINESS_SECONDS) -> int:
    sim = Simulator(_sim_config())
    sim.start_in_thread()
    try:
        with tempfile.TemporaryDirectory(prefix="stocksync-demo-") as folder:
            return _run(sim, Path(folder), seconds)
    finally:
        sim.stop()


def _sim_config() -> SimConfig:
    warehouses = (*WAREHOUSES, "GDG-4")
    catalogue = starter_catalogue(2026, ITEMS, warehouses)
    catalogue.forstok_warehouses = {"Toko Online": 101, "Marketplace": 102}
    return SimConfig(seed=2026, catalogue=catalogue)


def _run(sim: Simulator, folder: Path, seconds: float) -> int:
    config = _write_config(sim, folder)
    _say(f"simulator on {sim.accurate_account_url}; state in {folder}")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "daemon", "run", "--config", str(config)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _wait_for(lambda: _finished_runs(folder, "full_sync") >= 1, 60, daemon)
        _say("initial full sync done; the merchant starts doing business")

        _do_business(sim, seconds)

        _say("sending SIGHUP: a full sync now")
        before = _finished_runs(folder, "full_sync")
        daemon.send_signal(signal.SIGHUP)
        _wait_for(lambda: _finished_runs(folder, "full_sync") > before, 120, daemon)
        time.sleep(POLL_INTERVAL_S * 2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
    _say(f"daemon exited with status {code}")
    return _report(sim) or (1 if code else 0)


def _write_config(sim: Simulator, folder: Path) -> Path:
    accurate, forstok = sim.config.accurate, sim.config.forstok
    raw: dict[str, Any] = {
        "accurate": {
            "account_url": sim.accurate_account_url,
            "api_token": "${DEMO_ACCURATE_API_TOKEN}",
            "signature_secret": "${DEMO_ACCURATE_SIGNATURE_SECRET}",
        },
        "forstok": {
            "auth_url": sim.forstok_auth_url,
            "quantity_url": sim.forstok_quantity_url,
            "user_id": forstok.seller_id,
            "secret_key": "${DEMO_FORSTOK_SECRET_KEY}",
        },
        "warehouses": [{"accurate": a, "forstok_id": f} for a, f in WAREHOUSES.items()],
        "sync": {"poll_interval": f"{POLL_INTERVAL_S}s", "progress_interval": "2s"},
        "state_path": str(folder / "state.sqlite3"),
        "log": {"level": "info", "format": "auto"},
    }
    os.environ["DEMO_ACCURATE_API_TOKEN"] = accurate.api_token
    os.environ["DEMO_ACCURATE_SIGNATURE_SECRET"] = accurate.signature_secret
    os.environ["DEMO_FORSTOK_SECRET_KEY"] = forstok.secret_key
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
    return path


def _do_business(sim: Simulator, seconds: float) -> None:
    """Every kind once, an invoice deleted, then random activity."""
    business = Business(sim.accurate, sim.forstok, seed=2026)
    for line in business.every_kind_once():
        _say(f"merchant: {line}")

    invoice = max(sim.accurate.visible_documents("sales-invoice"), key=lambda d: d.id)
    sim.accurate.delete_document("sales-invoice", invoice.id)
    _say(f"merchant: delete sales-invoice {invoice.number}")

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _say(f"merchant: {business.step()}")
        time.sleep(1.0)


def _finished_runs(folder: Path, run_type: str) -> int:
    path = folder / "state.sqlite3"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute(
                "SELECT count(*) FROM run WHERE type = ? AND finished_at IS NOT NULL",
                (run_type,),
            ).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])


def _wait_for(condition: Any, timeout: float, daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if daemon.poll() is not None:
            raise SystemExit(f"demo: the daemon exited early with {daemon.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: gave up waiting after {timeout:.0f} s")
        time.sleep(0.5)


def _report(sim: Simulator) -> int:
    expected = _expected(sim)
    actual = sim.forstok.on_hand_snapshot()
    equal = sum(1 for key, value in expected.items() if actual.get(key) == value)
    _say(f"Forstok holds {len(actual)} (SKU, warehouse) pairs")
    _say(f"{equal} of {len(expected)} mapped pairs equal Accurate's stock")
    for key, value in sorted(expected.items()):
        if actual.get(key) != value:
            held = actual.get(key)
            _say(f"  differs: {key[0]} @ {key[1]}: Accurate {value}, Forstok {held}")
    return 0 if equal == len(expected) else 1


def _expected(sim: Simulator) -> dict[tuple[str, int], int]:
    totals: dict[tuple[str, int], Decimal] = {}
    for (item_no, warehouse), quantity in sim.accurate.stock_snapshot().items():
        item = sim.accurate.item_by_no(item_no)
        if (
            warehouse in WAREHOUSES
            and item.item_type == "INVENTORY"
            and not item.suspended
        ):
            key = (item_no, WAREHOUSES[warehouse])
            totals[key] = totals.get(key, Decimal(0)) + quantity
    return {
        key: int(max(total, Decimal(0)).to_integral_value(rounding=ROUND_FLOOR))
        for key, total in totals.items()
    }


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)
