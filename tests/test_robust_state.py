"""A state file stocksync cannot use: every command says so and exits.

A damaged or foreign state file, or a `state_path` in a place that is not a
writable directory, must end every command (the daemon included) with one
line naming `state_path`, the path and the fix, and exit status 78, which
the systemd unit does not restart on. Before, the command printed a
traceback and then never exited: the SQLite connection's worker thread,
never closed, kept the process alive.

Each command runs as a real `python -m daemon` process with a timeout: a
hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import yaml
from daemon_support import REPO, complete_full_sync, daemon_config

from daemon.errors import StateUnusable
from daemon.simulator.app import Simulator
from daemon.state import APPLICATION_ID, SCHEMA_VERSION, State

pytestmark = pytest.mark.timeout(120)

EX_CONFIG = 78
COMMANDS = (
    ("run",),
    ("status",),
    ("status", "--json"),
    ("mapping",),
    ("history", "SKU-001"),
    ("retry",),
    ("full-sync",),
)
AS_ROOT = os.geteuid() == 0


def stocksync(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m daemon ARGS --config CONFIG`; a hang past 30 s fails."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "daemon", *args, "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"stocksync {' '.join(args)} did not exit") from hung


def assert_refused(
    result: subprocess.CompletedProcess[str], path: Path, *fix: str
) -> str:
    """Exit 78, one `stocksync: state_path: PATH: ...` line, no traceback."""
    assert result.returncode == EX_CONFIG, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "daemon_crashed" not in result.stdout
    lines = [
        line for line in result.stderr.splitlines() if line.startswith("stocksync:")
    ]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"stocksync: state_path: {path}: "), lines[0]
    for words in fix:
        assert words in lines[0], lines[0]
    return lines[0]


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(64 * 1024))


def cut_in_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def zero_header(path: Path) -> None:
    """The first page wiped, as a crashed copy or a bad disk leaves it."""
    with path.open("r+b") as handle:
        handle.write(b"\0" * 4096)


@pytest.mark.parametrize(
    "damage", [random_bytes, cut_in_half, zero_header], ids=lambda f: f.__name__
)
def test_damaged_state_stops_every_command_with_one_line(
    sim: Simulator, tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    config = daemon_config(sim, tmp_path)
    complete_full_sync(config)  # a real state, with every table in use
    state = tmp_path / "state.sqlite3"
    damage(state)
    before = state.read_bytes()

    for command in COMMANDS:
        result = stocksync(config, *command)
        line = assert_refused(result, state, "restore it from a backup", "move it")
        assert "full sync" in line, line
    assert state.read_bytes() == before, "a refused command changed the file"


def test_state_under_a_regular_file_stops_every_command(
    sim: Simulator, tmp_path: Path
) -> None:
    """A path that fails for root too: a directory of it is a regular file."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    state = blocker / "state.sqlite3"
    config = daemon_config(sim, tmp_path)
    rewrite_state_path(config, state)

    for command in COMMANDS:
        result = stocksync(config, *command)
        assert_refused(result, state, f"{blocker} is not a directory", "state_path")


def test_state_path_naming_a_directory_is_refused(
    sim: Simulator, tmp_path: Path
) -> None:
    state = tmp_path / "state-dir"
    state.mkdir()
    config = daemon_config(sim, tmp_path)
    rewrite_state_path(config, state)

    for command in (("run",), ("status",), ("retry",)):
        result = stocksync(config, *command)
        assert_refused(result, state, "is a directory", "state.sqlite3")


@pytest.mark.skipif(AS_ROOT, reason="root ignores permission bits")
def test_state_directory_without_write_permission_is_refused(
    sim: Simulator, tmp_path: Path
) -> None:
    directory = tmp_path / "locked"
    directory.mkdir()
    state = directory / "state.sqlite3"
    config = daemon_config(sim, tmp_path)
    rewrite_state_path(config, state)
    directory.chmod(0o500)
    try:
        for command in COMMANDS:
            result = stocksync(config, *command)
            assert_refused(result, state, "may not write", "state_path")
    finally:
        directory.chmod(0o700)


@pytest.mark.skipif(AS_ROOT, reason="root ignores permission bits")
def test_unreadable_state_file_is_refused(sim: Simulator, tmp_path: Path) -> None:
    config = daemon_config(sim, tmp_path)
    complete_full_sync(config)
    state = tmp_path / "state.sqlite3"
    state.chmod(0o000)
    try:
        for command in COMMANDS:
            result = stocksync(config, *command)
            assert_refused(result, state, "read and write", "state_path")
    finally:
        state.chmod(0o600)


def test_a_failed_open_leaves_no_thread_behind(tmp_path: Path) -> None:
    """`State.open` on a file that is not a database raises StateUnusable and
    closes its connection: no worker thread may outlive the failure, or the
    process could never exit."""
    state = tmp_path / "state.sqlite3"
    random_bytes(state)
    before = set(threading.enumerate())

    with pytest.raises(StateUnusable) as caught:
        anyio.run(State.open, state)

    assert caught.value.path == str(state)
    assert "not a SQLite database" in str(caught.value)
    # Closed, the worker leaves after its last task: a moment later, not
    # necessarily by the time close() returns.
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=5)
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, f"threads left running: {left}"


def test_open_under_a_regular_file_names_the_blocker(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")

    with pytest.raises(StateUnusable) as caught:
        anyio.run(State.open, blocker / "sub" / "state.sqlite3")

    assert f"{blocker} is not a directory" in str(caught.value)


def test_a_good_state_still_opens_and_runs(sim: Simulator, tmp_path: Path) -> None:
    """The checks refuse nothing usable: status on a synced state works."""
    config = daemon_config(sim, tmp_path)
    complete_full_sync(config)

    result = stocksync(config, "status")

    assert result.returncode == 0, result.stderr


def another_programs_database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total TEXT)")
        db.execute("INSERT INTO orders VALUES (1, '10.00')")


def test_another_programs_database_is_refused_and_left_as_it_was(
    sim: Simulator, tmp_path: Path
) -> None:
    """A state_path that names some other program's SQLite file (a typo, a
    copied config) is refused before anything is written to it: no tables of
    ours added, no journal mode switched."""
    state = tmp_path / "state.sqlite3"
    another_programs_database(state)
    before = state.read_bytes()
    config = daemon_config(sim, tmp_path)

    for command in (("run",), ("status",), ("mapping",)):
        result = stocksync(config, *command)
        assert_refused(result, state, "another program", "tables orders", "new file")
    assert state.read_bytes() == before, "a refused command changed the file"


def open_state(path: Path) -> None:
    async def open_and_close() -> None:
        await (await State.open(path)).close()

    anyio.run(open_and_close)


def test_a_foreign_application_id_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite3"
    with contextlib.closing(sqlite3.connect(state)) as db:
        db.execute("PRAGMA application_id = 1234")

    with pytest.raises(StateUnusable) as caught:
        open_state(state)

    assert "another program (application_id 1234)" in str(caught.value)


def test_a_state_written_by_a_newer_stocksync_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite3"
    open_state(state)
    with contextlib.closing(sqlite3.connect(state)) as db, db:
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )

    with pytest.raises(StateUnusable) as caught:
        open_state(state)

    assert f"newer stocksync (schema {SCHEMA_VERSION + 1}" in str(caught.value)
    assert "run the newer stocksync again" in str(caught.value)


def test_a_state_made_before_the_header_stamp_is_adopted(tmp_path: Path) -> None:
    """State files from before the stamp hold only our tables: they open, and
    are stamped as ours from then on."""
    state = tmp_path / "state.sqlite3"
    open_state(state)
    with contextlib.closing(sqlite3.connect(state)) as db:
        db.execute("PRAGMA application_id = 0")

    open_state(state)

    with contextlib.closing(sqlite3.connect(state)) as db:
        stamp = db.execute("PRAGMA application_id").fetchone()[0]
    assert stamp == APPLICATION_ID


def rewrite_state_path(config: Path, state: Path) -> None:
    raw = yaml.safe_load(config.read_text())
    raw["state_path"] = str(state)
    config.write_text(yaml.safe_dump(raw))
