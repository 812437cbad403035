"""`stocksync status`: whether the daemon runs, its last poll and full sync,
cursors and their age, what waits and what fails; JSON and a table."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
from harness import write_config
from operator_support import cli, cli_json, full_sync, poll

from daemon.kinds import KINDS
from daemon.lock import InstanceLock
from daemon.simulator.accurate import LineSpec
from daemon.simulator.app import Simulator

Capture = pytest.CaptureFixture[str]


def test_reports_before_the_first_run_create_nothing(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """On a new machine status, mapping and history say nothing ran yet,
    and leave no state file behind."""
    config = write_config(sim, tmp_path)

    report = cli_json(capsys, config, "status")
    mapping = cli_json(capsys, config, "mapping")
    history = cli_json(capsys, config, "history", "SKU-001")

    assert (report["running"], report["daemon"]) == (False, None)
    assert report["state_exists"] is False
    assert {w["status"] for w in mapping["warehouses"]} == {"not read yet"}
    assert (mapping["mapped"], mapping["unknown_warehouses"]) == ([], [])
    assert history["pushes"] == []
    code, out, _ = cli(capsys, config, "status")
    assert (code, "the daemon has never run" in out) == (0, True)
    assert not (tmp_path / "state.sqlite3").exists()


def test_status_reports_runs_cursors_and_queues(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """After a full sync and a poll: when each ran, how long it took, its
    counts; every kind's cursor with its age; empty queues; the next full
    sync from the cron expression."""
    config = write_config(sim, tmp_path)
    full_sync(config)
    sim.accurate.create_document("sales-invoice", [LineSpec("SKU-001", 1, "GDG-1")])
    poll(config)

    report = cli_json(capsys, config, "status")

    full = report["last_full_sync"]
    assert full["outcome"] == "ok"
    assert full["error"] is None
    assert full["duration_s"] >= 0
    assert full["counts"]["pushed"] == 12
    assert report["last_poll"]["outcome"] == "ok"
    assert report["last_poll"]["counts"]["pushed"] == 1
    cursors = {c["kind"]: c for c in report["cursors"]}
    assert set(cursors) == {k.name for k in KINDS}
    assert isinstance(cursors["sales_invoice"]["cursor"], str)
    assert cursors["sales_invoice"]["age_s"] >= 0
    assert cursors["vendor_claim"]["feed"] == "transDate window"
    assert (report["pairs_waiting"], report["pushes_waiting"]) == (0, 0)
    assert report["pushes_failing"] == report["not_found_in_forstok"] == []
    assert datetime.fromisoformat(report["next_full_sync"]).hour == 2


def test_status_names_the_running_daemon_from_the_lock(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """While a process holds the state's lock, status shows its pid and host,
    from the lock's fields (not a dump of the lock object)."""
    config = write_config(sim, tmp_path)
    full_sync(config)

    with InstanceLock(tmp_path / "state.sqlite3"):
        report = cli_json(capsys, config, "status")
        code, text, _ = cli(capsys, config, "status")

    assert report["running"] is True
    assert report["daemon"]["pid"] == os.getpid()
    assert set(report["daemon"]) == {"pid", "host", "command", "started"}
    assert code == 0
    assert f"running, pid {os.getpid()}" in text


def test_status_table_for_a_person(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """Without --json, status prints aligned lines and a cursor table."""
    config = write_config(sim, tmp_path)
    full_sync(config)

    code, text, _ = cli(capsys, config, "status")

    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "daemon          not running"
    assert any(line.startswith("last full sync  ") and "ok" in line for line in lines)
    assert any(line.split() == ["kind", "cursor", "age"] for line in lines)
