"""Time in the simulator: clocks and Accurate's date formats.

Two notions of time are kept apart on purpose. The *business clock* (a
`Clock`) stamps documents, so tests can set it to `01/02/2026 10:00:00`.
Credentials (JWT `exp`, OAuth and session lifetimes, the API-token
timestamp check) use real time, because the daemon under test compares them
with its own real clock.
"""

from __future__ import annotations

import functools
import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

LAST_UPDATE_FORMAT = "%d/%m/%Y %H:%M:%S"
DATE_FORMAT = "%d/%m/%Y"


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...


class RealClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when a test moves it."""

    def __init__(self, start: datetime) -> None:
        _require_aware(start)
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, moment: datetime) -> None:
        _require_aware(moment)
        with self._lock:
            self._now = moment

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


class FastClock:
    """A clock that starts at `start` and runs `speed` times faster than real."""

    def __init__(self, start: datetime, speed: float) -> None:
        _require_aware(start)
        self._start = start
        self._speed = speed
        self._origin = time.monotonic()

    def now(self) -> datetime:
        elapsed = (time.monotonic() - self._origin) * self._speed
        return self._start + timedelta(seconds=elapsed)


def wall_clock(moment: datetime, zone: ZoneInfo) -> datetime:
    """The naive wall-clock reading in `zone`, at Accurate's second resolution."""
    return moment.astimezone(zone).replace(tzinfo=None, microsecond=0)


def format_last_update(stamp: datetime) -> str:
    return stamp.strftime(LAST_UPDATE_FORMAT)


def format_date(day: date) -> str:
    return day.strftime(DATE_FORMAT)


# Cached: a list filtered or sorted on lastUpdate parses every row, and a
# large catalogue shares few distinct stamps.
@functools.lru_cache(maxsize=1 << 16)
def parse_last_update(text: str) -> datetime:
    """Parse `dd/MM/yyyy HH:mm:ss` exactly; strptime alone accepts `1/2/2026`."""
    parsed = datetime.strptime(text, LAST_UPDATE_FORMAT)  # noqa: DTZ007 wall clock
    if format_last_update(parsed) != text:
        raise ValueError(f"not dd/MM/yyyy HH:mm:ss: {text!r}")
    return parsed


def parse_date(text: str) -> date:
    parsed = datetime.strptime(text, DATE_FORMAT).date()  # noqa: DTZ007 a date
    if format_date(parsed) != text:
        raise ValueError(f"not dd/MM/yyyy: {text!r}")
    return parsed


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None:
        raise ValueError("clock times must be timezone-aware")
