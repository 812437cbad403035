"""The one-instance lock on a state file (C21), with real processes."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from daemon.errors import InstanceLocked
from daemon.lock import Holder, InstanceLock, lock_path, read_holder

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parent.parent

# A stand-in for `stocksync run`: takes the lock, says so, then idles.
HOLDER_SCRIPT = """
import sys, time
from daemon.lock import InstanceLock
InstanceLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


@dataclass
class HeldState:
    state_path: Path
    process: subprocess.Popen[bytes]


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "stocksync.sqlite3"


@pytest.fixture
def held_state(state_path: Path) -> Iterator[HeldState]:
    """A state file whose lock another process holds."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(state_path)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"locked\n"
    try:
        yield HeldState(state_path, process)
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def test_lock_path_sits_next_to_the_state_file(tmp_path: Path) -> None:
    """The lock of `x.sqlite3` is `x.sqlite3.lock` in the same directory."""
    assert lock_path(tmp_path / "x.sqlite3") == tmp_path / "x.sqlite3.lock"


def test_second_process_is_refused_fast(held_state: HeldState) -> None:
    """A second process fails within 5 s, naming the lock and the holder pid."""
    started = time.monotonic()

    with pytest.raises(InstanceLocked) as caught:
        InstanceLock(held_state.state_path).acquire()

    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert str(lock_path(held_state.state_path)) in message
    assert f"pid {held_state.process.pid}" in message
    assert caught.value.lock_path == str(lock_path(held_state.state_path))


def test_refused_process_touches_nothing(held_state: HeldState) -> None:
    """A refused process leaves the lock label and the state directory as found."""
    directory = held_state.state_path.parent
    held_state.state_path.write_bytes(b"pretend database")
    before = {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()
    }

    with pytest.raises(InstanceLocked):
        InstanceLock(held_state.state_path, wait=0.2).acquire()

    after = {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()
    }
    assert after == before


def test_lock_is_released_when_the_holder_is_sigkilled(held_state: HeldState) -> None:
    """The kernel drops the lock of a SIGKILLed holder; no stale lock remains."""
    held_state.process.send_signal(signal.SIGKILL)
    held_state.process.wait()

    with InstanceLock(held_state.state_path, wait=0) as lock:
        assert lock.held
        holder = read_holder(held_state.state_path)
        assert holder is not None
        assert holder.pid == os.getpid()


def test_read_holder_names_the_running_holder(held_state: HeldState) -> None:
    """`status` learns the holder's pid, command line and start time."""
    holder = read_holder(held_state.state_path)

    assert holder is not None
    assert holder.pid == held_state.process.pid
    assert str(held_state.state_path) in holder.command
    assert datetime.fromisoformat(holder.started).tzinfo is not None


def test_read_holder_ignores_the_label_of_a_dead_holder(held_state: HeldState) -> None:
    """After SIGKILL the file still names the old pid, but nobody holds it."""
    held_state.process.kill()
    held_state.process.wait()

    assert lock_path(held_state.state_path).read_bytes()
    assert read_holder(held_state.state_path) is None


def test_read_holder_without_lock_file(state_path: Path) -> None:
    """No lock file means no daemon, and reading creates nothing."""
    assert read_holder(state_path) is None
    assert not lock_path(state_path).exists()


def test_release_clears_the_label_and_frees_the_lock(state_path: Path) -> None:
    """Leaving the context frees the lock at once and empties the label."""
    with InstanceLock(state_path) as lock:
        assert lock.holder is not None
        assert read_holder(state_path) == lock.holder

    assert read_holder(state_path) is None
    assert lock_path(state_path).read_bytes() == b""
    with InstanceLock(state_path, wait=0):
        pass


def test_two_locks_in_one_process_conflict(state_path: Path) -> None:
    """flock belongs to the open file, so even this process cannot lock twice."""
    with InstanceLock(state_path), pytest.raises(InstanceLocked):
        InstanceLock(state_path, wait=0).acquire()


def test_status_probe_does_not_make_the_daemon_refuse(state_path: Path) -> None:
    """A daemon starting during a `status` probe waits it out instead of exiting."""
    path = lock_path(state_path)
    path.parent.mkdir(parents=True)
    path.touch()
    probing = threading.Event()

    def probe() -> None:
        with path.open("rb") as file:
            fcntl.flock(file, fcntl.LOCK_SH)
            probing.set()
            time.sleep(0.2)

    thread = threading.Thread(target=probe, name="status-probe")
    thread.start()
    probing.wait()
    try:
        with InstanceLock(state_path) as lock:
            assert lock.held
    finally:
        thread.join()


def test_unreadable_label_still_reports_a_holder(state_path: Path) -> None:
    """A holder caught between its flock and its write is still reported."""
    path = lock_path(state_path)
    path.parent.mkdir(parents=True)
    path.touch()

    with path.open("rb") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        holder = read_holder(state_path)
        with pytest.raises(InstanceLocked, match="not identified itself"):
            InstanceLock(state_path, wait=0).acquire()

    assert holder == Holder(pid=None)
