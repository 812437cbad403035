"""The process ends once its exit status is decided, whatever is left running.

A thread that is not a daemon thread and was never stopped (a database
connection some error path forgot to close) makes Python wait for it at exit
for ever; under `run`, with SIGTERM blocked by then, only SIGKILL could end
the process. `python -m daemon` gives such threads a moment, then exits with
the status the command decided and says which threads it left.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_support import REPO, daemon_config

from daemon.early import LINGER_S
from daemon.simulator.app import Simulator

pytestmark = pytest.mark.timeout(90)

# A thread like the one an unclosed connection leaves: never daemon, never
# ending. Then the real entry point, as `python -m daemon` runs it.
LEAKY = """
import sys, threading
threading.Thread(target=threading.Event().wait, name="leaked-worker").start()
from daemon.early import main
raise SystemExit(main(sys.argv[1:]))
"""


def run(*args: str, leak: bool) -> tuple[subprocess.CompletedProcess[str], float]:
    command = ["-c", LEAKY] if leak else ["-m", "daemon"]
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, *command, *args],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=LINGER_S + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"{args} did not exit") from hung
    return result, time.monotonic() - started


@pytest.mark.parametrize("command", ["run", "status"])
def test_a_lingering_thread_cannot_hold_the_exit(
    sim: Simulator, tmp_path: Path, command: str
) -> None:
    config = daemon_config(sim, tmp_path)
    (tmp_path / "state.sqlite3").write_bytes(b"not a database" * 100)

    result, _ = run(command, "--config", str(config), leak=True)

    assert result.returncode == 78, result.stderr
    assert "state_path:" in result.stderr
    assert "threads still running at exit (leaked-worker)" in result.stderr


def test_a_lingering_thread_keeps_a_usage_error_as_it_was() -> None:
    """argparse ends a bad option with SystemExit: the status and message
    stay what they are without the thread."""
    clean, _ = run("status", "--no-such-option", leak=False)
    result, _ = run("status", "--no-such-option", leak=True)

    assert clean.returncode != 0
    assert result.returncode == clean.returncode, result.stderr
    assert "unrecognized arguments" in result.stderr
    assert "leaked-worker" in result.stderr


def test_a_clean_exit_does_not_wait(sim: Simulator, tmp_path: Path) -> None:
    config = daemon_config(sim, tmp_path)

    result, took = run("status", "--config", str(config), leak=False)

    assert result.returncode == 0, result.stderr
    assert "threads still running" not in result.stderr
    assert took < LINGER_S
