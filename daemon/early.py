"""The first code `python -m daemon` runs: hold signals while the daemon starts.

Importing the daemon takes a few hundred milliseconds, and until the event
loop listens, SIGHUP would do what it does by default: end the process. So
`run` first installs handlers that only remember the signal; the daemon
replays what they caught once its own receiver is in place (C27). Other
commands keep the default behaviour, so Ctrl-C stops them at once.

This module imports nothing but the standard library, so that the handlers
are in place before the slow imports start.

It also makes sure the process ends once the CLI has decided its status. A
thread that is not a daemon thread and was never stopped (a database
connection left open on some error path) would keep the interpreter waiting
at exit for ever, and in `run` with SIGTERM blocked, so that only SIGKILL
could end it. Such threads get a moment, then the process exits without them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from types import FrameType

HELD = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)

LINGER_S = 5.0
"""How long threads left running at exit may take to finish by themselves."""

_caught: list[int] = []


def hold_signals() -> None:
    """Remember SIGHUP, SIGTERM and SIGINT instead of acting on them."""
    for signum in HELD:
        signal.signal(signum, _remember)


def held_signals() -> list[signal.Signals]:
    """The signals caught since `hold_signals()`, oldest first; forgets them."""
    caught = [signal.Signals(signum) for signum in _caught]
    _caught.clear()
    return caught


def _remember(signum: int, frame: FrameType | None) -> None:
    _caught.append(signum)


def main(argv: list[str] | None = None) -> int:
    """`python -m daemon`: hold signals for `run`, then hand over to the CLI."""
    args = sys.argv[1:] if argv is None else argv
    daemon = args[:1] == ["run"]
    if daemon:
        hold_signals()

    from daemon.cli import main as cli_main

    try:
        status = cli_main(args)
    except BaseException as error:
        _finish(daemon)
        _exit_if_threads_linger(_status_of(error), error)
        raise
    _finish(daemon)
    _exit_if_threads_linger(status)
    return status


def _finish(daemon: bool) -> None:
    if daemon:
        # The exit status is decided. While the interpreter finalizes
        # it resets the handlers to their defaults, and a late SIGTERM
        # would turn a clean exit 0 into death by signal: block them.
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD)


def _exit_if_threads_linger(status: int, error: BaseException | None = None) -> None:
    """Exit now with `status` if threads that would hold the exit are still
    running after LINGER_S; return (to exit normally) if there are none."""
    deadline = time.monotonic() + LINGER_S
    for thread in _lingering():
        thread.join(max(0.0, deadline - time.monotonic()))
    left = _lingering()
    if not left:
        return
    if isinstance(error, SystemExit):
        if isinstance(error.code, str):
            print(error.code, file=sys.stderr)
    elif error is not None:
        traceback.print_exception(error)
    names = ", ".join(thread.name for thread in left)
    print(
        f"stocksync: internal error: threads still running at exit ({names}); "
        "exiting without them. Please report this with the lines above",
        file=sys.stderr,
    )
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone, a closed file
            stream.flush()
    os._exit(status)


def _lingering() -> list[threading.Thread]:
    current = threading.current_thread()
    return [
        thread
        for thread in threading.enumerate()
        if thread is not current and not thread.daemon and thread.is_alive()
    ]


def _status_of(error: BaseException) -> int:
    """The status Python itself would exit with for this exception."""
    if isinstance(error, SystemExit):
        code = error.code
        if code is None or isinstance(code, int):
            return code or 0
        return 1  # SystemExit("message") prints the message and exits 1
    if isinstance(error, KeyboardInterrupt):
        return 130
    return 1
