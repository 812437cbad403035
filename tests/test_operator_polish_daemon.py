"""What a new operator reads from a running daemon: push summaries, the
settings it really uses, why pushes stop, and host moves that are moves.

Each test runs `python -m daemon run` as a subprocess against the simulator
and reads its JSON log lines and `stocksync status`, as an operator would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_support import Daemons, StateFile, complete_full_sync, daemon_config
from harness import SCANNED_SECRETS
from operator_support import cli, cli_json

from daemon.simulator.accurate import LineSpec
from daemon.simulator.app import Simulator
from daemon.simulator.faults import FaultAction, FaultPlan, FaultRule

Capture = pytest.CaptureFixture[str]

pytestmark = pytest.mark.timeout(90)


def sell(sim: Simulator, sku: str = "SKU-001", quantity: int = 1) -> None:
    sim.accurate.create_document("sales-invoice", [LineSpec(sku, quantity, "GDG-1")])


def wait_until(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_each_push_round_that_did_something_logs_one_summary(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """The daemon pushes apart from its polls, so a push round ends with its
    own info line `push_finished` (counts, elapsed_s, run_id), while
    `poll_finished` no longer claims `pushed=0`; idle rounds log nothing."""
    config = daemon_config(sim, tmp_path)
    complete_full_sync(config)
    daemon = daemons.start(config)
    daemon.wait_for("daemon_started")

    sell(sim)
    pushed = daemon.wait_for("push_finished")
    polls_then = len(daemon.find("poll_finished"))
    daemon.wait_for("poll_finished", count=polls_then + 3)

    assert pushed["level"] == "info"
    assert (pushed["pushed"], pushed["rejected"], pushed["held"]) == (1, 0, 0)
    assert pushed["unchanged"] >= 0
    assert pushed["elapsed_s"] >= 0
    assert isinstance(pushed["run_id"], str)
    assert len(daemon.find("push_finished")) == 1
    polls = daemon.find("poll_finished")
    assert all("pushed" not in e and "unchanged" not in e for e in polls)
    found = [e for e in polls if e["documents"]]
    assert found
    assert found[0]["run_id"] != pushed["run_id"]
    assert sim.forstok.on_hand("SKU-001", 1) == 10


def test_status_shows_the_settings_the_daemon_runs_with(
    sim: Simulator, tmp_path: Path, daemons: Daemons, capsys: Capture
) -> None:
    """Editing config.yaml after the start changes nothing until a restart:
    status shows the daemon's dry_run, not the file's, and names each setting
    the file now differs in. The recorded settings hold no secret."""
    config = daemon_config(sim, tmp_path)
    complete_full_sync(config)
    daemon = daemons.start(config)
    daemon.wait_for("daemon_started")
    daemon_config(sim, tmp_path, dry_run=True, poll_interval="7s")

    report = cli_json(capsys, config, "status")
    code, text, _ = cli(capsys, config, "status")
    recorded = _meta(tmp_path, "daemon_settings")

    assert report["running"] is True
    assert report["dry_run"] is False
    assert report["settings"]["source"] == "running daemon"
    assert report["settings"]["values"]["sync.poll_interval"] == 1.0
    differs = {
        d["key"]: (d["daemon"], d["file"]) for d in report["settings"]["config_differs"]
    }
    assert differs == {
        "sync.dry_run": (False, True),
        "sync.poll_interval": (1.0, 7.0),
    }
    assert code == 0
    assert "dry run         no (sync.dry_run)" in text
    assert "changed since the daemon started; restart it to apply" in text
    assert "sync.dry_run: daemon no, file yes" in text
    assert recorded["pid"] == daemon.pid
    assert not [s for s in SCANNED_SECRETS if s in json.dumps(recorded)]


def test_status_after_the_daemon_stopped_shows_the_file(
    sim: Simulator, tmp_path: Path, daemons: Daemons, capsys: Capture
) -> None:
    """Once the daemon is gone, the file is what the next start uses: status
    shows it and flags nothing."""
    config = daemon_config(sim, tmp_path)
    complete_full_sync(config)
    daemon = daemons.start(config)
    daemon.wait_for("daemon_started")
    assert daemon.stop() == 0
    daemon_config(sim, tmp_path, dry_run=True)

    report = cli_json(capsys, config, "status")

    assert report["running"] is False
    assert report["dry_run"] is True
    assert report["settings"]["source"] == "config file"
    assert report["settings"]["config_differs"] == []


def test_status_says_since_when_forstok_is_unavailable_and_when_it_is_back(
    sim: Simulator, tmp_path: Path, daemons: Daemons, capsys: Capture
) -> None:
    """While Forstok answers 503, the first full sync reads everything but
    is recorded as `pushes_not_sent`, and status says since when Forstok is
    unavailable; once it answers again the queue drains and the problem
    clears."""
    config = daemon_config(sim, tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["forstok"]["max_retries"] = 0
    config.write_text(yaml.safe_dump(raw))
    down = FaultAction("status", status=503)
    sim.install_faults(FaultPlan([FaultRule(down, "forstok", "*/quantities.json")]))
    daemon = daemons.start(config)

    finished = daemon.wait_for("full_sync_finished")
    during = cli_json(capsys, config, "status")
    _, text, _ = cli(capsys, config, "status")
    sim.install_faults(FaultPlan([]))
    daemon.wait_for("push_finished")
    wait_until(lambda: cli_json(capsys, config, "status")["push_problem"] is None)

    assert finished["outcome"] == "pushes_not_sent"
    assert during["last_full_sync"]["outcome"] == "pushes_not_sent"
    assert "forstok_unavailable" in during["last_full_sync"]["error"]
    problem = during["push_problem"]
    assert problem["event"] == "forstok_unavailable"
    assert (bool(problem["since"]), problem["until"]) == (True, None)
    assert "pushes not sent" in text
    assert "pushes          not sent: Forstok unavailable since " in text
    wait_until(lambda: sim.forstok.on_hand("SKU-001", 1) == 11)


def test_a_new_state_learns_the_host_without_calling_it_a_move(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """The first data host a new state learns is logged as
    `accurate_data_host`, not `accurate_host_moved`; a later real move (a 308
    to another host) is, with the host it moved from."""
    config = daemon_config(sim, tmp_path)
    old_host, new_host = sim.accurate_data_urls
    daemon = daemons.start(config)
    daemon.wait_for("full_sync_finished")
    learned = daemon.find("accurate_data_host")
    assert daemon.find("accurate_host_moved") == []

    moved = FaultAction("redirect_other_host")
    rule = FaultRule(moved, "accurate", "*/sales-invoice/list.do", count=1)
    sim.install_faults(FaultPlan([rule]))
    event = daemon.wait_for("accurate_host_moved")

    assert [e["host"] for e in learned] == [old_host]
    assert (event["previous"], event["host"]) == (old_host, new_host)
    assert len(daemon.find("accurate_host_moved")) == 1


def _meta(tmp_path: Path, key: str) -> Any:
    rows = StateFile(tmp_path / "state.sqlite3").query(
        "SELECT value FROM meta WHERE key = ?", (key,)
    )
    return json.loads(rows[0][0])
