"""The daemon process rides out outages and refused credentials.

`python -m daemon run` against the simulator, observed from outside: its
JSON log lines, its state file (read-only) and the simulator's request log.
It must never exit because the network failed, must keep what it has queued,
report each change of a service's state once, and catch up by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_support import DaemonProcess, Daemons, StateFile
from harness import mismatches
from network_support import network_config, plan, sell

from daemon.simulator import FaultAction, Simulator

pytestmark = pytest.mark.timeout(60)

OUTAGE_S = 3.0


def eventually(condition: Callable[[], bool], daemon: DaemonProcess) -> None:
    """Wait up to 20 s for `condition`, failing early if the daemon exits."""
    deadline = time.monotonic() + 20
    while not condition():
        assert daemon.running, daemon.tail()
        assert time.monotonic() < deadline, daemon.tail()
        time.sleep(0.05)


def converged(sim: Simulator) -> Callable[[], bool]:
    return lambda: mismatches(sim) == {}


def started(sim: Simulator, tmp_path: Path, daemons: Daemons) -> DaemonProcess:
    """A daemon polling every half second, one retry per call, in sync."""
    config = network_config(
        sim,
        tmp_path,
        accurate={"max_retries": 1},
        forstok={"max_retries": 1},
        sync={"poll_interval": "0.5s"},
    )
    daemon = daemons.start(config)
    daemon.wait_for("full_sync_finished")
    eventually(converged(sim), daemon)
    return daemon


def assert_once_each(daemon: DaemonProcess, down: str, up: str) -> None:
    assert len(daemon.find(down)) == 1, daemon.tail()
    assert len(daemon.find(up)) == 1, daemon.tail()
    assert daemon.find(down)[0]["level"] == "warning"


def test_accurate_outage(sim: Simulator, tmp_path: Path, daemons: Daemons) -> None:
    """Accurate answering 503 to everything for 3 s: the daemon keeps
    running, pauses its reads rather than polling into the outage, logs
    accurate_unavailable and then accurate_available once each, and pushes
    the sale made during the outage once Accurate is back."""
    daemon = started(sim, tmp_path, daemons)

    outage = FaultAction("status", status=503)
    sim.install_faults(plan(outage, "accurate", until_s=OUTAGE_S))
    sell(sim)
    daemon.wait_for("accurate_unavailable")
    assert mismatches(sim)
    daemon.wait_for("accurate_available", timeout=20)
    eventually(converged(sim), daemon)

    # One poll's reads give up together; then reads pause instead of
    # meeting the outage again every half second.
    assert sim.requests.count("accurate", status=503) <= 50
    (paused,) = daemon.find("accurate_reads_paused")
    assert paused["retry_in_s"] == 5.0
    assert_once_each(daemon, "accurate_unavailable", "accurate_available")
    assert daemon.find("daemon_crashed") == []
    assert daemon.stop() == 0


def test_forstok_outage(sim: Simulator, tmp_path: Path, daemons: Daemons) -> None:
    """Forstok resetting every connection for 3 s: the pushes stay queued in
    the state file, forstok_unavailable and forstok_available are logged
    once each, and the queue drains by itself afterwards."""
    daemon = started(sim, tmp_path, daemons)
    state = StateFile(tmp_path / "state.sqlite3")

    sim.install_faults(plan(FaultAction("reset"), "forstok", until_s=OUTAGE_S))
    sell(sim)
    sell(sim, item="SKU-002")
    daemon.wait_for("forstok_unavailable")
    eventually(lambda: state.count("push_queue") == 2, daemon)
    daemon.wait_for("forstok_available", timeout=20)
    eventually(converged(sim), daemon)
    eventually(lambda: state.count("push_queue") == 0, daemon)

    assert_once_each(daemon, "forstok_unavailable", "forstok_available")
    assert daemon.stop() == 0


def test_refused_credentials_never_stop_the_daemon(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """A revoked token at start-up and again mid-run: the daemon stays up,
    reports the refusal with what to do, asks Accurate about once per
    credential_retry_interval (1 s) rather than every poll, and carries on
    by itself once the token is valid again."""
    sim.accurate_auth.api_token_revoked = True
    config = network_config(sim, tmp_path, sync={"poll_interval": "0.2s"})
    daemon = daemons.start(config)

    daemon.wait_for("accurate_credentials_rejected", count=2)
    sim.accurate_auth.api_token_revoked = False
    daemon.wait_for("full_sync_finished")
    eventually(converged(sim), daemon)

    sim.accurate_auth.api_token_revoked = True
    sell(sim)
    refused = daemon.wait_for("accurate_credentials_rejected", count=3)
    sim.requests.reset()
    time.sleep(3.0)
    asked = sim.requests.count("accurate")
    sim.accurate_auth.api_token_revoked = False
    daemon.wait_for("accurate_credentials_accepted", count=2)
    eventually(converged(sim), daemon)

    assert "create a new API token" in refused["action"]
    assert refused["level"] == "error"
    assert 2 <= asked <= 4  # one try a second, not one per 0.2 s poll
    assert daemon.find("poll_failed") == []
    assert daemon.stop() == 0
