"""One state file, one lock, however its path is spelt.

The lock file sits beside the state file's real path. A symlink to the
file, a symlinked directory or a `..` spelling names the same file, so it
must meet the same lock: a second daemon through any of them is refused with
exit 75, as a second daemon on the plain path is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from daemon_support import Daemons, daemon_config

from daemon.errors import InstanceLocked
from daemon.lock import InstanceLock, lock_path, read_holder
from daemon.simulator.app import Simulator

pytestmark = pytest.mark.timeout(60)


def file_symlink(real: Path, tmp_path: Path) -> Path:
    link = tmp_path / "elsewhere" / "link.sqlite3"
    link.parent.mkdir()
    link.symlink_to(real)
    return link


def directory_symlink(real: Path, tmp_path: Path) -> Path:
    link = tmp_path / "linked-dir"
    link.symlink_to(real.parent, target_is_directory=True)
    return link / real.name


def dot_dot(real: Path, tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    return tmp_path / "sub" / ".." / real.relative_to(tmp_path)


SPELLINGS = [file_symlink, directory_symlink, dot_dot]


@pytest.fixture
def real_state(tmp_path: Path) -> Path:
    state = tmp_path / "state" / "state.sqlite3"
    state.parent.mkdir()
    state.write_bytes(b"")  # SQLite takes an empty file as a new database
    return state


@pytest.mark.parametrize("spell", SPELLINGS, ids=lambda f: f.__name__)
def test_another_spelling_meets_the_same_lock(
    real_state: Path, tmp_path: Path, spell: Callable[[Path, Path], Path]
) -> None:
    other = spell(real_state, tmp_path)
    assert os.path.samefile(other, real_state)

    assert lock_path(other) == lock_path(real_state)
    with InstanceLock(real_state), pytest.raises(InstanceLocked) as caught:
        InstanceLock(other, wait=0).acquire()
    assert caught.value.lock_path == str(real_state.parent / "state.sqlite3.lock")


@pytest.mark.parametrize("spell", SPELLINGS, ids=lambda f: f.__name__)
def test_holder_is_seen_through_any_spelling(
    real_state: Path, tmp_path: Path, spell: Callable[[Path, Path], Path]
) -> None:
    other = spell(real_state, tmp_path)

    with InstanceLock(other):
        holder = read_holder(real_state)
    assert holder is not None
    assert holder.pid == os.getpid()


def test_second_daemon_through_a_symlink_exits_75(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """Two real daemons: the second one's state_path is a symlink to the
    first one's state file, in another directory with its own config."""
    first_config = daemon_config(sim, tmp_path)
    first = daemons.start(first_config)
    first.wait_for("daemon_started")

    second_dir = tmp_path / "second"
    second_dir.mkdir()
    link = second_dir / "state.sqlite3"
    link.symlink_to(tmp_path / "state.sqlite3")
    raw = yaml.safe_load(first_config.read_text())
    raw["state_path"] = str(link)
    second_config = second_dir / "config.yaml"
    second_config.write_text(yaml.safe_dump(raw))
    second_config.chmod(0o600)

    second = daemons.start(second_config)

    assert second.wait(timeout=15) == 75, second.tail()
    assert str(tmp_path / "state.sqlite3.lock") in second.output()
    assert f"pid {first.pid}" in second.output()
    assert first.running
    assert first.stop() == 0
