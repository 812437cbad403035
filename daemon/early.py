"""The first code `python -m daemon` runs: hold signals while the daemon starts.

Importing the daemon takes a few hundred milliseconds, and until the event
loop listens, SIGHUP would do what it does by default: end the process. So
`run` first installs handlers that only remember the signal; the daemon
replays what they caught once its own receiver is in place (C27). Other
commands keep the default behaviour, so Ctrl-C stops them at once.

This module imports nothing but the standard library, so that the handlers
are in place before the slow imports start.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

HELD = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)

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
        return cli_main(args)
    finally:
        if daemon:
            # The exit status is decided. While the interpreter finalizes
            # it resets the handlers to their defaults, and a late SIGTERM
            # would turn a clean exit 0 into death by signal: block them.
            signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
