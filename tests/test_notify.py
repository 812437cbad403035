"""The systemd notify protocol, checked against real AF_UNIX datagram sockets."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from daemon.notify import Notifier, watchdog_loop

pytestmark = pytest.mark.timeout(20)


@dataclass
class Listener:
    """A bound datagram socket standing in for systemd's notify socket."""

    sock: socket.socket
    name: str  # the value NOTIFY_SOCKET carries

    def receive(self, timeout: float = 2.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096)

    def drain(self) -> list[bytes]:
        self.sock.setblocking(False)
        messages = []
        while True:
            try:
                messages.append(self.sock.recv(4096))
            except BlockingIOError:
                return messages


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temporary directory with a short path: AF_UNIX paths fit in 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="ssn-", dir="/tmp") as directory:
        yield Path(directory)


@pytest.fixture
def path_listener(short_dir: Path) -> Iterator[Listener]:
    """A notify socket bound to a file, as systemd's /run/systemd/notify is."""
    path = str(short_dir / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        yield Listener(sock, path)


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    """A notify socket in the abstract namespace, named `@...` in the variable."""
    name = f"stocksync-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        yield Listener(sock, "@" + name)


def notifier_for(listener: Listener, **extra: str) -> Notifier:
    return Notifier({"NOTIFY_SOCKET": listener.name, **extra})


def test_ready_sends_ready(path_listener: Listener) -> None:
    """ready() sends exactly READY=1."""
    notifier_for(path_listener).ready()

    assert path_listener.receive() == b"READY=1"


def test_ready_with_status_is_one_datagram(path_listener: Listener) -> None:
    """READY=1 and its STATUS= travel together, so systemd sees both at once."""
    notifier_for(path_listener).ready("idle, next poll in 30 s")

    assert path_listener.receive() == b"READY=1\nSTATUS=idle, next poll in 30 s"


def test_status_reaches_an_abstract_socket(abstract_listener: Listener) -> None:
    """An `@name` NOTIFY_SOCKET is the abstract-namespace socket `\\0name`."""
    notifier_for(abstract_listener).status("full sync 40% (12,000/30,000 pairs)")

    assert abstract_listener.receive() == b"STATUS=full sync 40% (12,000/30,000 pairs)"


def test_status_text_stays_on_one_line(path_listener: Listener) -> None:
    """A newline in the text cannot smuggle in a second assignment."""
    notifier_for(path_listener).status("polling\nREADY=1")

    assert path_listener.receive() == b"STATUS=polling READY=1"


def test_stopping_and_watchdog_messages(path_listener: Listener) -> None:
    """stopping() and watchdog() send their single assignment each."""
    notifier = notifier_for(path_listener)

    notifier.stopping()
    notifier.watchdog()

    assert path_listener.receive() == b"STOPPING=1"
    assert path_listener.receive() == b"WATCHDOG=1"


def test_reloading_carries_the_monotonic_clock(path_listener: Listener) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC read from CLOCK_MONOTONIC."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier_for(path_listener).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    first, second = path_listener.receive().split(b"\n")
    assert first == b"RELOADING=1"
    key, value = second.split(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_without_notify_socket_nothing_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outside systemd every call is a silent no-op."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()

    with capture_logs() as logs:
        notifier.ready()
        notifier.watchdog()

    assert not notifier.enabled
    assert notifier.send("READY=1") is False
    assert logs == []


def test_notifier_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, path_listener: Listener
) -> None:
    """By default the socket comes from os.environ, as systemd sets it."""
    monkeypatch.setenv("NOTIFY_SOCKET", path_listener.name)

    Notifier().ready()

    assert path_listener.receive() == b"READY=1"


def test_vanished_socket_never_crashes_and_warns_once(short_dir: Path) -> None:
    """Sends to a socket that is gone fail quietly after one warning."""
    path = short_dir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    path.unlink()
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})

    with capture_logs() as logs:
        notifier.ready()
        notifier.status("still here")
        notifier.watchdog()

    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("notify_failed", "warning")
    ]
    assert logs[0]["socket"] == str(path)


def test_closed_abstract_socket_never_crashes() -> None:
    """An abstract name nobody listens on is refused, and that is not fatal."""
    notifier = Notifier({"NOTIFY_SOCKET": f"@stocksync-gone-{uuid.uuid4().hex}"})

    with capture_logs() as logs:
        assert notifier.send("WATCHDOG=1") is False

    assert len(logs) == 1


def test_unsupported_socket_kind_disables_notify() -> None:
    """A kind of address we cannot speak (vsock) disables notify with a warning."""
    with capture_logs() as logs:
        notifier = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})

    assert not notifier.enabled
    assert logs[0]["event"] == "notify_socket_unsupported"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 60.0),
        ({"WATCHDOG_USEC": "250000", "WATCHDOG_PID": str(os.getpid())}, 0.25),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
    ids=["set", "our-pid", "other-pid", "zero", "garbage", "unset"],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    """The interval is WATCHDOG_USEC in seconds, and only if it is meant for us."""
    assert Notifier(environ).watchdog_interval() == expected


async def test_watchdog_loop_pings_at_half_the_interval(
    path_listener: Listener,
) -> None:
    """With a 0.2 s watchdog the loop pings every 0.1 s: about 10 in 1 s."""
    notifier = notifier_for(path_listener, WATCHDOG_USEC="200000")

    with anyio.move_on_after(1.0):
        await watchdog_loop(notifier)

    pings = path_listener.drain()
    assert set(pings) == {b"WATCHDOG=1"}
    assert 7 <= len(pings) <= 12


async def test_watchdog_loop_falls_silent_while_the_loop_is_blocked(
    path_listener: Listener,
) -> None:
    """Pings come from the event loop, so a blocked loop sends none."""
    notifier = notifier_for(path_listener, WATCHDOG_USEC="100000")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watchdog_loop, notifier, name="watchdog")
        await anyio.sleep(0.3)
        assert len(path_listener.drain()) >= 3

        time.sleep(0.5)  # noqa: ASYNC251  # the hang under test
        assert path_listener.drain() == []

        await anyio.sleep(0.2)
        assert len(path_listener.drain()) >= 1
        tasks.cancel_scope.cancel()


async def test_watchdog_loop_returns_when_not_watched() -> None:
    """Without WATCHDOG_USEC the loop ends at once instead of idling forever."""
    with anyio.fail_after(1):
        await watchdog_loop(Notifier({"NOTIFY_SOCKET": "/nonexistent"}))
