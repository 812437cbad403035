"""Signals to the running daemon (C27, C21b): a reload never kills, stop is clean.

Each test starts `python -m daemon run` as its own process with a real
notify socket, against the simulator on loopback, and inspects it from
outside: its JSON log lines, its notify messages and its state file.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest
from daemon_support import (
    Daemons,
    StateFile,
    complete_full_sync,
    daemon_config,
    signals_caught,
)
from harness import mismatches

from daemon.simulator.app import Simulator
from daemon.simulator.faults import FaultAction, FaultPlan, FaultRule
from daemon.simulator.forstok import QUANTITY_PATH

pytestmark = pytest.mark.timeout(60)

QUIET_S = 1.0
"""How long a test watches for a full sync that must not happen."""


def hang(service: str, endpoint: str) -> FaultPlan:
    """Requests to this endpoint get no answer at all, retries included."""
    return FaultPlan([FaultRule(FaultAction("hang"), service, endpoint)])


def full_syncs_started(events: list[dict[str, object]]) -> list[object]:
    return [e.get("reason") for e in events if e["event"] == "full_sync_started"]


def test_sighup_the_moment_ready_arrives_runs_a_full_sync(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """READY=1 comes after the handlers: a SIGHUP sent on READY is a reload."""
    notify = daemons.notify_socket()
    daemon = daemons.start(daemon_config(sim, tmp_path), notify=notify)
    notify.on_message(
        lambda message: (
            daemon.send(signal.SIGHUP) if "READY=1" in message.split("\n") else None
        )
    )

    notify.wait_for("READY=1")
    daemon.wait_for("full_sync_requested", reason="SIGHUP")
    daemon.wait_for("full_sync_finished")

    assert daemon.running
    assert daemon.stop() == 0


def test_c27a_sighup_during_start_up_gives_one_full_sync_once_ready(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """SIGHUP 50 ms after start, long before READY: held, then one full sync."""
    config = daemon_config(sim, tmp_path)
    complete_full_sync(config)
    notify = daemons.notify_socket()

    daemon = daemons.start(config, notify=notify)
    # A signal that arrives before the interpreter runs any of our code
    # kills any Python program; wait until the handler exists, which is
    # the first thing `python -m daemon run` does.
    while signal.SIGHUP not in signals_caught(daemon.pid):
        time.sleep(0.002)
    time.sleep(max(0.0, daemon.started + 0.05 - time.monotonic()))
    assert notify.messages() == [], "the test meant to signal during start-up"
    daemon.send(signal.SIGHUP)

    notify.wait_for("READY=1")
    daemon.wait_for("full_sync_finished")
    time.sleep(QUIET_S)

    assert daemon.running
    assert daemon.find("full_sync_requested", reason="SIGHUP", during_start_up=True)
    assert full_syncs_started(daemon.events) == ["SIGHUP"]
    assert daemon.stop() == 0


def test_c27a_sighup_during_migrations_gives_one_full_sync_once_ready(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """SIGHUP while opening the state waits on SQLite: queued, not fatal."""
    config = daemon_config(sim, tmp_path)
    complete_full_sync(config)
    state = StateFile(tmp_path / "state.sqlite3")
    notify = daemons.notify_socket()

    lock = tmp_path / "state.sqlite3.lock"
    blocker = sqlite3.connect(state.path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the daemon's schema step waits
        daemon = daemons.start(config, notify=notify)
        deadline = time.monotonic() + 10
        while not (lock.exists() and lock.read_bytes().strip()):
            assert time.monotonic() < deadline, "the daemon never took its lock"
            time.sleep(0.005)
        daemon.send(signal.SIGHUP)  # lock held: it is opening the state now
        time.sleep(0.3)
        assert daemon.running
        assert notify.messages() == [], "READY=1 came before the state was open"
    finally:
        blocker.close()

    notify.wait_for("READY=1")
    daemon.wait_for("full_sync_finished")
    time.sleep(QUIET_S)

    assert daemon.running
    assert daemon.find("full_sync_requested", reason="SIGHUP")
    assert full_syncs_started(daemon.events) == ["SIGHUP"]
    assert daemon.stop() == 0


def test_c27b_two_sighups_during_a_full_sync_make_exactly_one_more(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """Two SIGHUPs 10 ms apart, mid full sync: one more run after it, no overlap."""
    config = daemon_config(sim, tmp_path)
    complete_full_sync(config)
    notify = daemons.notify_socket()
    daemon = daemons.start(config, notify=notify)
    notify.wait_for("READY=1")
    held = sim.when_request("accurate", "*list-stock.do")

    daemon.send(signal.SIGHUP)
    assert held.wait(10), "the full sync never read a stock page"
    daemon.send(signal.SIGHUP)
    time.sleep(0.01)
    daemon.send(signal.SIGHUP)
    daemon.wait_for("full_sync_requested", count=3)
    held.release()

    daemon.wait_for("full_sync_finished", count=2)
    time.sleep(QUIET_S)

    assert daemon.running
    assert full_syncs_started(daemon.events) == ["SIGHUP", "SIGHUP"]
    names = [e["event"] for e in daemon.events]
    first_end = names.index("full_sync_finished")
    second_start = len(names) - names[::-1].index("full_sync_started") - 1
    assert first_end < second_start, "the two full syncs overlapped"
    assert daemon.stop() == 0


def test_c27c_sighup_while_a_push_is_in_flight_keeps_its_pairs_queued(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """The batch in flight finishes; its pairs leave the queue only when accepted."""
    config = daemon_config(sim, tmp_path)
    complete_full_sync(config)
    state = StateFile(tmp_path / "state.sqlite3")
    daemon = daemons.start(config)
    daemon.wait_for("poll_finished")
    held = sim.when_request("forstok", QUANTITY_PATH)

    sim.accurate.set_opening_balance("SKU-003", "GDG-2", 40)
    assert held.wait(10), "no push was sent"
    daemon.send(signal.SIGHUP)
    daemon.wait_for("full_sync_requested", reason="SIGHUP")
    queued_in_flight = state.count("push_queue")
    held.release()
    daemon.wait_for("full_sync_finished")
    deadline = time.monotonic() + 10
    while (mismatches(sim) or state.count("push_queue")) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)

    assert daemon.running
    assert queued_in_flight >= 1
    assert state.count("push_queue") == 0
    assert mismatches(sim) == {}
    assert daemon.stop() == 0


def test_sigterm_during_a_push_exits_0_in_time_with_the_pairs_still_queued(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """SIGTERM with a push unanswered: exit 0 within 10 s, nothing lost.

    A second SIGTERM during the shutdown is noted and ignored. The pairs
    whose push got no answer stay queued, and the next start pushes them.
    """
    config = daemon_config(sim, tmp_path, timeouts=1.0)
    complete_full_sync(config)
    state = StateFile(tmp_path / "state.sqlite3")
    daemon = daemons.start(config)
    daemon.wait_for("poll_finished")
    sim.install_faults(hang("forstok", QUANTITY_PATH))
    sent = sim.when_request("forstok", QUANTITY_PATH, hold=False)
    sim.accurate.set_opening_balance("SKU-003", "GDG-2", 40)
    assert sent.wait(10), "no push was sent"

    stopped_at = time.monotonic()
    daemon.send(signal.SIGTERM)
    daemon.wait_for("daemon_stopping")
    daemon.send(signal.SIGTERM)
    code = daemon.wait(timeout=10)
    elapsed = time.monotonic() - stopped_at
    sim.install_faults(FaultPlan())

    assert code == 0
    assert elapsed < 10
    assert daemon.find("signal_ignored", signal="SIGTERM")
    assert daemon.find("work_abandoned", units=["push"])
    assert state.count("push_queue") >= 1
    assert state.query("SELECT 1 FROM cursor WHERE kind = 'opening_balance'")
    assert mismatches(sim) != {}

    again = daemons.start(config)
    deadline = time.monotonic() + 15
    while (mismatches(sim) or state.count("push_queue")) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert mismatches(sim) == {}
    assert state.count("push_queue") == 0
    assert again.stop() == 0


def test_sigterm_during_a_full_sync_records_it_as_interrupted(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """A full sync cut short by SIGTERM is not recorded as complete, so the
    next start runs one again."""
    config = daemon_config(sim, tmp_path, timeouts=1.0)
    state = StateFile(tmp_path / "state.sqlite3")
    sim.install_faults(hang("accurate", "*list-stock.do"))
    reading = sim.when_request("accurate", "*list-stock.do", hold=False)
    daemon = daemons.start(config)
    assert reading.wait(15), "the first full sync never read a stock page"

    daemon.send(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0
    sim.install_faults(FaultPlan())

    assert daemon.find("work_abandoned")
    assert [r[1:] for r in state.runs("full_sync")] == [("failed", "interrupted")]
    again = daemons.start(config)
    again.wait_for(
        "full_sync_started",
        reason="the last full sync did not complete: failed",
    )
    again.wait_for("full_sync_finished")
    assert again.stop() == 0
    assert [outcome for _, outcome, _ in state.runs("full_sync")] == ["failed", "ok"]


def test_a_full_sync_killed_after_a_complete_one_runs_again_at_start(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """SIGKILL (or the OOM killer, or a watchdog) leaves no outcome behind:
    the run stays open in the state file, and an earlier complete full sync
    must not hide it. The next start runs a full sync again."""
    config = daemon_config(sim, tmp_path)
    state = StateFile(tmp_path / "state.sqlite3")
    first = daemons.start(config)
    first.wait_for("full_sync_finished")
    sim.install_faults(hang("accurate", "*list-stock.do"))

    first.send(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while len(state.runs("full_sync")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send(signal.SIGKILL)
    first.wait(timeout=10)
    sim.install_faults(FaultPlan())
    assert [outcome for _, outcome, _ in state.runs("full_sync")] == ["ok", None]

    again = daemons.start(config)
    again.wait_for(
        "full_sync_started",
        reason="the last full sync did not complete: cut short by a killed process",
    )
    again.wait_for("full_sync_finished")
    assert again.stop() == 0


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: str(s.name)
)
def test_stop_signal_exits_0_and_says_so(
    sim: Simulator, tmp_path: Path, daemons: Daemons, signum: signal.Signals
) -> None:
    """SIGTERM (systemctl stop) and SIGINT (Ctrl-C) both stop cleanly: exit 0,
    STOPPING=1 to systemd, and a last `daemon_stopped` line."""
    notify = daemons.notify_socket()
    daemon = daemons.start(daemon_config(sim, tmp_path), notify=notify)
    daemon.wait_for("poll_finished")

    daemon.send(signum)

    assert daemon.wait(timeout=10) == 0
    assert "STOPPING=1" in notify.messages()
    assert daemon.events[-1]["event"] == "daemon_stopped"
    assert daemon.find("signal_received", signal=signum.name)
