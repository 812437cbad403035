"""One process per state file: an exclusive `flock` on `<state_path>.lock`.

The lock belongs to an open file, so the kernel drops it when the holder
exits in any way, SIGKILL included: a crash never leaves a stale lock for an
operator to clean up. The holder writes its pid, command line and start time
into the file, so that a refused second process (C21) and `stocksync status`
can say who holds it. Those contents are only a label: whether the lock is
held is always asked of the kernel, never read from the file.

The file is never deleted. Unlinking it would let a newcomer lock a fresh
inode while the old holder still holds the unlinked one.

The lock sits beside the state file's real path, with symlinks and `..`
resolved: two spellings of one file must meet at one lock, or two daemons
would sync the same state at once.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from daemon.errors import InstanceLocked, StateUnusable

# A `status` probe takes the lock shared for a few microseconds; trying again
# for a moment keeps such a probe from making the daemon refuse to start.
DEFAULT_WAIT = 1.0
_POLL = 0.05
_MAX_TEXT = 4096
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW
# Failures to create the lock file that may pass by themselves; any other
# means the path is wrong or forbidden, which only the operator can fix.
_PASSING = (errno.ENOSPC, errno.EDQUOT, errno.EINTR, errno.EAGAIN)


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as the holder wrote it (`pid` None if unreadable)."""

    pid: int | None
    command: str = ""
    started: str = ""
    host: str = ""

    def describe(self) -> str:
        if self.pid is None:
            return "a process that has not identified itself"
        text = f"pid {self.pid}"
        if self.host:
            text += f" on {self.host}"
        if self.command:
            text += f" ({self.command})"
        if self.started:
            text += f", started {self.started}"
        return text


def lock_path(state_path: Path | str) -> Path:
    """The lock file that guards a state file, beside its real path."""
    path = Path(os.path.realpath(state_path))
    return path.with_name(path.name + ".lock")


class InstanceLock:
    """Exclusive right to work on one state file, for the life of the process.

    `acquire()` blocks for at most `wait` seconds (call it before the event
    loop gets busy, or in a worker thread) and raises `InstanceLocked`, having
    changed nothing, when another process holds the lock.
    """

    def __init__(self, state_path: Path | str, *, wait: float = DEFAULT_WAIT) -> None:
        self.state_path = Path(state_path)
        self.path = lock_path(state_path)
        self._wait = wait
        self._fd: int | None = None
        # What this lock wrote into the file, while it holds it.
        self.holder: Holder | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> Holder:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this InstanceLock")
        fd = self._open()
        try:
            self._lock_or_raise(fd)
            holder = _this_process()
            _write(fd, holder)
        except BaseException:
            os.close(fd)  # closing also drops the lock, if we got it
            raise

        self._fd, self.holder = fd, holder
        return holder

    def release(self) -> None:
        """Give the lock up; safe to call twice."""
        fd, self._fd, self.holder = self._fd, None, None
        if fd is None:
            return
        try:
            # Clear the label first, while still holding the lock.
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
        except OSError as error:
            if error.errno in _PASSING:
                raise
            raise StateUnusable(
                str(self.state_path),
                f"its lock file {self.path} cannot be created ({error.strerror})",
                f"give the user stocksync runs as (uid {os.getuid()}) write access "
                "to the directory, or point state_path at a file in a directory "
                "it may write (under systemd: ${STATE_DIRECTORY}/state.sqlite3)",
            ) from error

    def _lock_or_raise(self, fd: int) -> None:
        deadline = time.monotonic() + self._wait
        while not _try_lock(fd, fcntl.LOCK_EX):
            if time.monotonic() >= deadline:
                holder = _parse(_read(fd))
                raise InstanceLocked(str(self.path), holder.describe())
            time.sleep(_POLL)


def read_holder(state_path: Path | str) -> Holder | None:
    """Who holds the lock on a state file right now, or None if nobody does.

    Raises PermissionError when the caller may not open the lock file: that
    says nothing about whether the daemon runs, so it is not turned into None.
    """
    try:
        fd = os.open(lock_path(state_path), os.O_RDONLY | _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None  # no lock file can be there, so nobody holds it
    try:
        if _try_lock(fd, fcntl.LOCK_SH):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return _parse(_read(fd))
    finally:
        os.close(fd)


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _this_process() -> Holder:
    return Holder(
        pid=os.getpid(),
        command=shlex.join(sys.argv)[:200],
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        host=socket.gethostname(),
    )


def _write(fd: int, holder: Holder) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(asdict(holder)).encode() + b"\n", 0)


def _read(fd: int) -> bytes:
    return os.pread(fd, _MAX_TEXT, 0)


def _parse(raw: bytes) -> Holder:
    try:
        data = json.loads(raw)
        pid = data["pid"]
        if not isinstance(pid, int):
            raise TypeError("pid is not a number")
        return Holder(
            pid=pid,
            command=str(data.get("command", "")),
            started=str(data.get("started", "")),
            host=str(data.get("host", "")),
        )
    except (ValueError, TypeError, KeyError):
        # Empty while a new holder is between its flock and its write.
        return Holder(pid=None)
