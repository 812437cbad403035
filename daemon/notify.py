"""The systemd notify protocol: readiness, status, reload, stop and watchdog.

systemd hands a service the address of a datagram socket in `$NOTIFY_SOCKET`
(a path, or `@name` for the abstract namespace). Each message is one datagram
of newline-separated `KEY=VALUE` assignments. Outside systemd the variable is
unset and every method here does nothing, so the daemon behaves the same in a
terminal, a test or a container.

A failed send never stops the daemon: stock keeps syncing even when systemd
cannot hear about it. The first failure is logged once as a warning.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import anyio
import structlog


class Notifier:
    """Sends state changes to systemd; a no-op when `$NOTIFY_SOCKET` is unset."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._socket_name = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(self._socket_name)
        self._watchdog = _watchdog_interval(env, os.getpid())
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str | None = None) -> None:
        """Tell systemd start-up (or a reload) is complete.

        Send it only once the configuration is valid, the state is open and
        the signal handlers exist: systemd delivers `systemctl reload` as
        SIGHUP from that moment on (C27).
        """
        lines = ["READY=1"]
        if status is not None:
            lines.append(_status_line(status))
        self.send(*lines)

    def status(self, text: str) -> None:
        """Set the one-line text `systemctl status` shows."""
        self.send(_status_line(text))

    def reloading(self) -> None:
        """Acknowledge a reload request; answer with `ready()` once it is taken.

        systemd keeps the unit in "reloading" until READY=1 arrives, so send
        READY=1 as soon as the full sync is queued, not when it ends.
        """
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={now_us}")

    def stopping(self) -> None:
        """Tell systemd shutdown has begun."""
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        """Tell systemd the event loop is alive."""
        self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds systemd waits for a ping before it kills us, if it watches."""
        return self._watchdog

    def send(self, *assignments: str) -> bool:
        """Send one datagram; True if it left, False if disabled or failed."""
        if self._address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # A full receive queue must never stall the event loop.
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError as exc:
            self._warn_once(exc)
            return False
        return True

    def _warn_once(self, exc: OSError) -> None:
        if self._warned:
            return
        self._warned = True
        # A fresh logger each time: a cached module-level one would escape
        # structlog.testing.capture_logs() once the app caches loggers.
        structlog.get_logger(__name__).warning(
            "notify_failed",
            socket=self._socket_name,
            error=f"{type(exc).__name__}: {exc}",
            note="further notify failures are not logged",
        )


async def watchdog_loop(notifier: Notifier) -> None:
    """Ping systemd's watchdog at half its interval until cancelled.

    The pings come from the event loop itself, so a loop that hangs stops
    them and systemd restarts the process. Returns at once when systemd does
    not watch this process.
    """
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    while True:
        notifier.watchdog()
        await anyio.sleep(interval / 2)


def _socket_address(name: str) -> str | None:
    if name.startswith("@"):
        # Abstract namespace: the kernel name starts with a NUL byte.
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    if name:
        structlog.get_logger(__name__).warning("notify_socket_unsupported", socket=name)
    return None


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    owner = env.get("WATCHDOG_PID")
    # systemd sets WATCHDOG_PID so that a child that inherits the
    # environment does not ping on its parent's behalf.
    if owner is not None and owner.strip() != str(pid):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


def _status_line(text: str) -> str:
    # A newline would end the assignment and start a bogus one.
    return "STATUS=" + " ".join(text.splitlines())
