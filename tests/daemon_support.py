"""The daemon as systemd runs it: `python -m daemon run` in its own process.

A test talks to it only from outside, as systemd and an operator do:
signals, a real notify socket (`NOTIFY_SOCKET`), its stdout parsed as JSON
lines, and its SQLite state file opened read-only. The simulator serves
Accurate and Forstok on loopback from the test process.

Loaded as a plugin by `harness`, so the fixtures below are available to
every test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
import yaml
from harness import settings_dict

from daemon.config import load_settings
from daemon.service import open_engine
from daemon.simulator.app import Simulator

REPO = Path(__file__).resolve().parent.parent
Event = dict[str, Any]


class NotifySocket:
    """A datagram socket standing in for systemd's; a thread collects messages."""

    def __init__(self) -> None:
        # AF_UNIX paths must fit in 108 bytes; pytest's tmp_path may not.
        self._directory = tempfile.mkdtemp(prefix="ssn-", dir="/tmp")
        self.path = os.path.join(self._directory, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.05)
        self._lock = threading.Lock()
        self._received: list[tuple[float, str]] = []
        self._callbacks: list[Callable[[str], None]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify", daemon=True)
        self._thread.start()

    def on_message(self, callback: Callable[[str], None]) -> None:
        """Call `callback(message)` from the reader thread as each one arrives."""
        with self._lock:
            self._callbacks.append(callback)

    def received(self) -> list[tuple[float, str]]:
        """(time.monotonic() on arrival, message), oldest first."""
        with self._lock:
            return list(self._received)

    def messages(self) -> list[str]:
        return [message for _, message in self.received()]

    def assignments(self, key: str) -> list[tuple[float, str]]:
        """Every value given to `key` (such as STATUS), with its arrival time."""
        found = []
        for moment, message in self.received():
            for line in message.split("\n"):
                name, _, value = line.partition("=")
                if name == key:
                    found.append((moment, value))
        return found

    def wait_for(self, line: str, timeout: float = 15.0) -> float:
        """Wait for a message holding `line` (such as READY=1); its arrival time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for moment, message in self.received():
                if line in message.split("\n"):
                    return moment
            time.sleep(0.01)
        raise AssertionError(f"no {line} within {timeout} s: {self.messages()}")

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._sock.close()
        shutil.rmtree(self._directory, ignore_errors=True)

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            message = data.decode()
            with self._lock:
                self._received.append((time.monotonic(), message))
                callbacks = list(self._callbacks)
            for callback in callbacks:
                callback(message)


class DaemonProcess:
    """`python -m daemon run --config CONFIG`, its stdout read as JSON lines."""

    def __init__(
        self,
        config: Path,
        *,
        notify: NotifySocket | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        environ = {
            key: value
            for key, value in os.environ.items()
            if key not in {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}
        }
        environ["PYTHONUNBUFFERED"] = "1"
        if notify is not None:
            environ["NOTIFY_SOCKET"] = notify.path
        environ.update(env or {})
        self.config = config
        self._lock = threading.Lock()
        self.events: list[Event] = []
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--config", str(config)],
            cwd=REPO,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._readers = [
            threading.Thread(
                target=self._read, args=(self.process.stdout, True), daemon=True
            ),
            threading.Thread(
                target=self._read, args=(self.process.stderr, False), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def find(self, event: str, **fields: Any) -> list[Event]:
        """The events named `event` whose fields include `fields`."""
        with self._lock:
            return [
                e
                for e in self.events
                if e.get("event") == event
                and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_for(
        self, event: str, timeout: float = 15.0, count: int = 1, **fields: Any
    ) -> Event:
        """Wait until `count` such events were logged; the last of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(event, **fields)
            if len(found) >= count:
                return found[count - 1]
            if not self.running:
                time.sleep(0.1)  # let the readers drain the pipes
                found = self.find(event, **fields)
                if len(found) >= count:
                    return found[count - 1]
                raise AssertionError(
                    f"daemon exited ({self.process.returncode}) before {event}"
                    f"\n{self.tail()}"
                )
            time.sleep(0.02)
        raise AssertionError(f"no {count} x {event} within {timeout} s\n{self.tail()}")

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit; its status (negative: killed by signal)."""
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit."""
        if self.running:
            self.send(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.running:
            self.process.kill()
        self.wait(timeout=10)

    def output(self) -> str:
        """Everything it wrote, stdout then stderr."""
        with self._lock:
            return "\n".join([*self.stdout_lines, *self.stderr_lines])

    def bad_stdout_lines(self) -> list[str]:
        """Lines on stdout that are not one JSON object each."""
        bad = []
        with self._lock:
            lines = list(self.stdout_lines)
        for line in lines:
            try:
                if not isinstance(json.loads(line), dict):
                    bad.append(line)
            except ValueError:
                bad.append(line)
        return bad

    def tail(self, lines: int = 40) -> str:
        with self._lock:
            return "\n".join([*self.stdout_lines[-lines:], *self.stderr_lines[-20:]])

    def _read(self, stream: IO[bytes], is_stdout: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                if not is_stdout:
                    self.stderr_lines.append(line)
                    continue
                self.stdout_lines.append(line)
                try:
                    parsed = json.loads(line)
                except ValueError:
                    continue
                if isinstance(parsed, dict):
                    self.events.append(parsed)
        stream.close()


class Daemons:
    """Starts daemons and notify sockets for one test, and cleans up after it."""

    def __init__(self) -> None:
        self.started: list[DaemonProcess] = []
        self._sockets: list[NotifySocket] = []

    def notify_socket(self) -> NotifySocket:
        listener = NotifySocket()
        self._sockets.append(listener)
        return listener

    def start(
        self,
        config: Path,
        *,
        notify: NotifySocket | None = None,
        env: dict[str, str] | None = None,
    ) -> DaemonProcess:
        daemon = DaemonProcess(config, notify=notify, env=env)
        self.started.append(daemon)
        return daemon

    def close(self) -> None:
        for daemon in self.started:
            daemon.kill()
        for listener in self._sockets:
            listener.close()
        # Into the test's captured output: shown when it fails, and read by
        # the harness's check that no test secret appears in any output.
        for number, daemon in enumerate(self.started, start=1):
            print(f"--- daemon {number} (exit {daemon.process.returncode}) ---")
            print(daemon.output())


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    """Start `python -m daemon run` processes; all are killed at the end."""
    started = Daemons()
    try:
        yield started
    finally:
        started.close()


def daemon_config(
    sim: Simulator, tmp_path: Path, *, timeouts: float = 2.0, **sync: Any
) -> Path:
    """A config file for a daemon process against the simulator.

    Requests time out after `timeouts` seconds, which also bounds the grace
    a shutdown gives to work in flight. The full sync runs only on request:
    its cron names a minute the suite never reaches at the right moment.
    """
    state = tmp_path / "state.sqlite3"
    raw = settings_dict(sim, state, **{"progress_interval": "50ms", **sync})
    raw["sync"].setdefault("full_sync_cron", "0 0 1 1 *")
    raw["accurate"]["timeout"] = timeouts
    raw["forstok"]["timeout"] = timeouts
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    path.chmod(0o600)
    return path


def complete_full_sync(config: Path) -> None:
    """Give the config's state a completed full sync, as a previous run would."""

    async def body() -> None:
        settings = load_settings(config, environ={})
        async with open_engine(settings) as engine:
            await engine.prepare()
            await engine.full_sync("earlier run")

    anyio.run(body)


class StateFile:
    """The daemon's SQLite file, read-only, as `stocksync status` reads it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        uri = f"file:{self.path}?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=10) as db:
            return list(db.execute(sql, args).fetchall())

    def count(self, table: str) -> int:
        assert table.isidentifier()
        return int(self.query(f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608

    def runs(self, run_type: str) -> list[tuple[str, str | None, str | None]]:
        """(id, outcome, error) of each run of a type, oldest first."""
        return [
            (str(row[0]), row[1], row[2])
            for row in self.query(
                "SELECT id, outcome, error FROM run WHERE type = ? ORDER BY started_at",
                (run_type,),
            )
        ]


def signals_caught(pid: int) -> set[signal.Signals]:
    """The signals a process has handlers for, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            mask = int(line.split()[1], 16)
            return {s for s in signal.Signals if mask >> (s.value - 1) & 1}
    return set()
