"""The daemon as the benchmark runs it: its own process, a config file, a state file.

Each run is measured from outside the process: wall time from spawn to exit,
CPU seconds from the kernel's accounting of the reaped child (`wait4`), peak
resident memory from `VmHWM` in /proc/<pid>/status, read every 0.1 s while it
runs. (`wait4`'s `ru_maxrss` would not do: it keeps the high-water mark of
the forked copy of this process, simulator and all, from before the exec.)
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daemon.simulator.app import Simulator

WAREHOUSES = {"GDG-1": 1, "GDG-2": 2, "GDG-3": 3}
"""Accurate warehouse -> Forstok warehouse, one to one."""


@dataclass(frozen=True)
class Limits:
    """What the daemon is told: the services' limits, scaled by `factor`."""

    factor: int
    page_size: int = 100
    batch_size: int = 20
    poll_interval_s: float = 30.0

    @property
    def accurate_per_s(self) -> int:
        return 8 * self.factor

    @property
    def forstok_per_min(self) -> int:
        return 50 * self.factor


@dataclass(frozen=True)
class Outcome:
    """One daemon process, measured."""

    exit_code: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str


def write_config(sim: Simulator, folder: Path, limits: Limits) -> Path:
    forstok = sim.config.forstok
    raw: dict[str, Any] = {
        "accurate": {
            "account_url": sim.accurate_account_url,
            "api_token": "${BENCH_ACCURATE_API_TOKEN}",
            "signature_secret": "${BENCH_ACCURATE_SIGNATURE_SECRET}",
            "requests_per_second": limits.accurate_per_s,
            "max_in_flight": 8,
            "page_size": limits.page_size,
        },
        "forstok": {
            "auth_url": sim.forstok_auth_url,
            "quantity_url": sim.forstok_quantity_url,
            "user_id": forstok.seller_id,
            "secret_key": "${BENCH_FORSTOK_SECRET_KEY}",
            "requests_per_minute": limits.forstok_per_min,
            "batch_size": limits.batch_size,
        },
        "warehouses": [{"accurate": a, "forstok_id": f} for a, f in WAREHOUSES.items()],
        "sync": {
            "poll_interval": f"{limits.poll_interval_s:g}s",
            "progress_interval": "30s",
        },
        "state_path": str(folder / "state.sqlite3"),
        "log": {"level": "info", "format": "json"},
    }
    path = folder / f"config-x{limits.factor}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
    return path


def environment(sim: Simulator) -> dict[str, str]:
    """The secrets the config file names, as environment variables."""
    secrets = {
        "BENCH_ACCURATE_API_TOKEN": sim.config.accurate.api_token,
        "BENCH_ACCURATE_SIGNATURE_SECRET": sim.config.accurate.signature_secret,
        "BENCH_FORSTOK_SECRET_KEY": sim.config.forstok.secret_key,
    }
    return {**os.environ, **secrets, "PYTHONUNBUFFERED": "1"}


def run(
    command: list[str],
    config: Path,
    env: dict[str, str],
    log: Path,
    until: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Outcome:
    """Run `python -m daemon COMMAND`; with `until`, SIGTERM once it returns."""
    started = time.monotonic()
    with (
        log.open("ab") as err,
        subprocess.Popen(
            [sys.executable, "-m", "daemon", *command, "--config", str(config)],
            stdout=subprocess.PIPE if until is None else err,
            stderr=err,
            env=env,
        ) as process,
    ):
        peak = _HighWater(process.pid)
        stdout = b""
        if until is None:
            assert process.stdout is not None
            stdout = process.stdout.read()
        else:
            until(process)
            process.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(process.pid, 0)
        peak.stop()
        process.returncode = os.waitstatus_to_exitcode(status)
    return Outcome(
        exit_code=process.returncode,
        wall_s=time.monotonic() - started,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=peak.kib / 1024,
        stdout=stdout.decode("utf-8", "replace"),
    )


class _HighWater:
    """The largest VmHWM seen of a running process, sampled on a thread."""

    def __init__(self, pid: int) -> None:
        self.path = Path(f"/proc/{pid}/status")
        self.kib = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.is_set():
            self._read()
            self._done.wait(0.1)

    def _read(self) -> None:
        try:
            text = self.path.read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                self.kib = max(self.kib, int(line.split()[1]))

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def start_up_cpu_s() -> float:
    """CPU seconds of starting Python and importing the daemon, to subtract."""
    code = "import daemon.cli, daemon.service, daemon.sync"
    with subprocess.Popen([sys.executable, "-c", code]) as process:
        _, _, usage = os.wait4(process.pid, 0)
        process.returncode = 0
    return usage.ru_utime + usage.ru_stime


def state_scalar(state: Path, sql: str) -> int:
    """One number from the daemon's state file, read-only; 0 if unreadable."""
    if not state.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute(sql).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0] or 0) if row else 0


def state_size_mb(state: Path) -> float:
    files = [state, state.with_name(state.name + "-wal")]
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6
