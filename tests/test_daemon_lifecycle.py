"""The daemon process under systemd's eyes: notify, watchdog, logs, exit codes.

`python -m daemon run` runs as its own process with a real notify socket;
what systemd would see (READY, STATUS, WATCHDOG, the exit status) and what
the journal would get (stdout) are checked from outside.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from daemon_support import Daemons, daemon_config

from daemon.lock import read_holder
from daemon.simulator.app import Simulator

pytestmark = pytest.mark.timeout(60)

EX_TEMPFAIL = 75
EX_CONFIG = 78


def test_watchdog_pings_come_at_half_the_configured_interval(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """WATCHDOG_USEC=400 ms: the event loop pings every 200 ms while it works,
    never leaving a gap as long as the interval."""
    notify = daemons.notify_socket()
    daemon = daemons.start(
        daemon_config(sim, tmp_path),
        notify=notify,
        env={"WATCHDOG_USEC": "400000"},
    )
    ready = notify.wait_for("READY=1")
    daemon.wait_for("full_sync_finished")
    time.sleep(max(0.0, ready + 2.1 - time.monotonic()))

    pings = [t for t, m in notify.received() if m == "WATCHDOG=1" and t >= ready]
    window = [t for t in pings if t <= ready + 2.0]
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert 8 <= len(window) <= 12
    assert max(gaps) < 0.4, "a gap as long as the watchdog interval"
    assert daemon.find("daemon_started")[0]["watchdog_s"] == 0.4
    assert daemon.stop() == 0


def test_no_watchdog_pings_when_systemd_does_not_watch(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """Without WATCHDOG_USEC (or with another process's WATCHDOG_PID), none."""
    notify = daemons.notify_socket()
    daemon = daemons.start(
        daemon_config(sim, tmp_path),
        notify=notify,
        env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"},
    )
    daemon.wait_for("poll_finished", count=2)

    assert "WATCHDOG=1" not in notify.messages()
    assert daemon.stop() == 0


def test_status_lines_say_what_the_daemon_does(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """STATUS= shows full-sync progress, then "idle, next poll in N s"."""
    notify = daemons.notify_socket()
    daemon = daemons.start(daemon_config(sim, tmp_path), notify=notify)
    daemon.wait_for("full_sync_finished")
    daemon.wait_for("poll_finished", count=2)
    daemon.stop()

    statuses = [text for _, text in notify.assignments("STATUS")]
    ready = next(m for m in notify.messages() if "READY=1" in m.split("\n"))
    assert "STATUS=starting" in ready
    assert any(re.search(r"^full sync \d+% \(\d+/\d+ pages", s) for s in statuses)
    assert any(re.fullmatch(r"idle, next poll in [01] s", s) for s in statuses)
    assert "polling" in statuses
    assert statuses[-1] == "stopping"
    assert all("\n" not in s for s in statuses)


def test_stdout_is_one_json_object_per_line(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """Every stdout line parses as JSON with a UTC timestamp, level and event,
    and the work's events carry their context keys."""
    daemon = daemons.start(daemon_config(sim, tmp_path))
    daemon.wait_for("full_sync_finished")
    daemon.wait_for("poll_finished", count=2)
    daemon.send(signal.SIGHUP)
    daemon.wait_for("full_sync_finished", count=2)
    assert daemon.stop() == 0

    assert daemon.bad_stdout_lines() == []
    assert daemon.stderr_lines == []
    for event in daemon.events:
        assert {"timestamp", "level", "event"} <= set(event), event
        moment = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        assert moment.utcoffset() == UTC.utcoffset(None)
        assert event["level"] in {"debug", "info", "warning", "error", "critical"}
        assert re.fullmatch(r"[a-z][a-z0-9_]*", event["event"]), event["event"]
    runs = daemon.find("full_sync_finished") + daemon.find("poll_finished")
    assert runs
    assert all(re.fullmatch(r"[0-9a-f]{8}", str(e.get("run_id"))) for e in runs)
    assert any(e.get("kind") for e in daemon.find("http_request"))
    assert any(e.get("warehouse") for e in daemon.find("http_request"))


def test_config_error_exits_78_before_touching_anything(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """An invalid config exits 78 (systemd does not restart), listing every
    problem on stderr, without READY and without creating any state."""
    config = daemon_config(sim, tmp_path)
    raw = yaml.safe_load(config.read_text())
    del raw["warehouses"]
    raw["sync"]["poll_interval"] = "soon"
    config.write_text(yaml.safe_dump(raw))
    notify = daemons.notify_socket()

    daemon = daemons.start(config, notify=notify)

    assert daemon.wait(timeout=15) == EX_CONFIG
    errors = "\n".join(daemon.stderr_lines)
    assert "warehouses" in errors
    assert "sync.poll_interval" in errors
    assert "Traceback" not in errors
    assert notify.messages() == []
    assert not (tmp_path / "state.sqlite3").exists()


def test_second_instance_exits_75_naming_the_holder(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """A second daemon on the same state exits 75 within 5 s, naming the lock
    and the first one's pid, and the first one carries on (C21a)."""
    config = daemon_config(sim, tmp_path)
    first = daemons.start(config)
    first.wait_for("poll_finished")
    holder = read_holder(tmp_path / "state.sqlite3")
    assert holder is not None
    assert holder.pid == first.pid

    notify = daemons.notify_socket()
    started = time.monotonic()
    second = daemons.start(config, notify=notify)
    code = second.wait(timeout=15)

    assert code == EX_TEMPFAIL
    assert time.monotonic() - started < 5
    message = "\n".join(second.stderr_lines)
    assert "state.sqlite3.lock" in message
    assert f"pid {first.pid}" in message
    assert notify.messages() == []
    assert not second.find("daemon_started")
    polls = len(first.find("poll_finished"))
    first.wait_for("poll_finished", count=polls + 1)
    assert first.stop() == 0


def test_logs_read_by_jq_style_filters(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """The README's jq filters select real events: errors and warnings, one
    run's events by run_id, and the full sync summaries."""
    daemon = daemons.start(daemon_config(sim, tmp_path))
    summary = daemon.wait_for("full_sync_finished")
    assert daemon.stop() == 0

    lines = [json.loads(line) for line in daemon.stdout_lines]
    one_run = [e for e in lines if e.get("run_id") == summary["run_id"]]
    assert one_run[0]["event"] == "full_sync_started"
    assert one_run[-1]["event"] == "full_sync_finished"
    assert {"pushed", "pairs_read", "elapsed_s"} <= set(summary)
