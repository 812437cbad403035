"""One worker per state file, and SQLite under the daemon's own concurrency.

A second `stocksync run` or a `stocksync full-sync` beside a running daemon is
refused at once with exit status 75, naming the lock and its holder; inside
the daemon, full syncs never overlap and any number of SIGHUPs during one make
exactly one more (C21). Polls, pushes and a full sync running together, beside
an operator's reader and writer, never meet "database is locked" (C24).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import anyio
import pytest
import structlog
from daemon_support import REPO, Daemons, StateFile, daemon_config
from harness import mismatches
from sync_cases import engine_for

from daemon.lock import lock_path
from daemon.simulator.app import Simulator

pytestmark = pytest.mark.timeout(60)


def stocksync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_c21_second_instance_is_refused_naming_lock_and_holder(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """While a daemon runs, a second `stocksync run` and a `stocksync
    full-sync` on its state exit 75 within 5 s, naming the lock file and the
    holder's pid; the first daemon carries on."""
    config = daemon_config(sim, tmp_path)
    first = daemons.start(config)
    first.wait_for("daemon_started")

    for command in ("run", "full-sync"):
        started = time.monotonic()
        refused = stocksync(command, "--config", str(config))
        assert time.monotonic() - started < 5
        assert refused.returncode == 75, refused.stderr
        assert str(lock_path(tmp_path / "state.sqlite3")) in refused.stderr
        assert f"pid {first.pid}" in refused.stderr

    assert first.running
    assert first.stop() == 0


def test_c21_sighups_during_a_full_sync_make_exactly_one_more(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """Two SIGHUPs while the first full sync reads stock: that sync finishes,
    then exactly one more runs, starting after the first ended."""
    config = daemon_config(sim, tmp_path)
    stock_read = sim.when_request("accurate", "*/item/list-stock.do", nth=1)
    daemon = daemons.start(config)
    assert stock_read.wait(20), daemon.tail()

    for count in (1, 2):  # one at a time: the kernel merges a pending pair
        daemon.send(signal.SIGHUP)
        daemon.wait_for("full_sync_requested", count=count)
    stock_read.release()
    daemon.wait_for("full_sync_finished", count=2, timeout=30)
    time.sleep(1.5)  # time enough for a third to start, if one were queued

    started = daemon.find("full_sync_started")
    assert [e["reason"] for e in started] == ["no full sync yet", "SIGHUP"]
    assert daemon.stop() == 0
    runs = StateFile(tmp_path / "state.sqlite3").query(
        "SELECT started_at, finished_at FROM run WHERE type = 'full_sync' "
        "ORDER BY started_at"
    )
    assert len(runs) == 2
    first_end, second_start = runs[0][1], runs[1][0]
    assert datetime.fromisoformat(first_end) <= datetime.fromisoformat(second_start)


class OperatorWriter(threading.Thread):
    """Another process's write transactions, as `stocksync retry` makes them:
    each holds the write lock for a moment."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="operator-writer", daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.errors: list[Exception] = []

    def run(self) -> None:
        with sqlite3.connect(self.path, timeout=10, isolation_level=None) as db:
            while not self.stop.is_set():
                try:
                    db.execute("BEGIN IMMEDIATE")
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('probe', '1')")
                    time.sleep(0.05)
                    db.execute("COMMIT")
                except sqlite3.Error as error:
                    self.errors.append(error)
                time.sleep(0.02)


async def test_c24_concurrent_work_never_meets_a_locked_database(
    sim: Simulator, tmp_path: Path
) -> None:
    """A full sync, polls and pushes run together while the merchant works, a
    reader holds a deferred transaction open and another process keeps taking
    the write lock: every write waits its turn, none fails, and Forstok ends
    equal to Accurate."""
    path = tmp_path / "state.sqlite3"
    async with engine_for(sim, tmp_path) as h:
        reader = sqlite3.connect(path)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM reading").fetchall()
        writer = OperatorWriter(path)
        writer.start()
        try:
            with structlog.testing.capture_logs() as events:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(h.engine.full_sync, "test")
                    for _ in range(4):
                        for _ in range(5):
                            sim.business.step()
                        tg.start_soon(h.engine.push)
                        await h.engine.poll()
        finally:
            writer.stop.set()
            writer.join(5)
            reader.rollback()
            reader.close()
        await h.engine.poll()
        await h.engine.full_sync("test")

    assert writer.errors == []
    assert not [e for e in events if "locked" in str(e).lower()]
    assert mismatches(sim) == {}
