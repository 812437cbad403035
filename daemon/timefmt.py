"""Accurate's timestamps and the cursor arithmetic built on them.

Accurate writes `lastUpdate` as `dd/MM/yyyy HH:mm:ss` wall-clock time in the
database's zone (WIB unless configured otherwise). A cursor is kept as the
exact string Accurate wrote and is never converted to another zone: the
filter we send is that same wall clock minus the lookback, so a wrong guess
about the zone can only widen the overlap, never skip a document (C06).

Everything here is a pure function over plain values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

LAST_UPDATE_FORMAT = "%d/%m/%Y %H:%M:%S"
DATE_FORMAT = "%d/%m/%Y"

# strptime alone accepts `1/2/2026 9:0:0`; Accurate always pads, so anything
# else is a value we do not understand and must not guess at (C08).
_LAST_UPDATE_SHAPE = re.compile(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}")


class BadTimestamp(ValueError):
    """A `lastUpdate` value that is not in Accurate's exact format."""

    def __init__(self, value: object) -> None:
        self.value = value
        super().__init__(
            f"lastUpdate {value!r} is not in the format dd/MM/yyyy HH:mm:ss"
        )


def parse_last_update(value: object) -> datetime:
    """Parse a `lastUpdate` strictly, day first; naive, in Accurate's zone."""
    if not isinstance(value, str) or not _LAST_UPDATE_SHAPE.fullmatch(value):
        raise BadTimestamp(value)
    try:
        return datetime.strptime(value, LAST_UPDATE_FORMAT)  # noqa: DTZ007  wall clock of Accurate's zone, kept naive on purpose
    except ValueError as exc:
        raise BadTimestamp(value) from exc


def format_last_update(moment: datetime) -> str:
    return moment.strftime(LAST_UPDATE_FORMAT)


def format_date(day: date) -> str:
    return day.strftime(DATE_FORMAT)


def window_start(cursor: str | None, lookback_seconds: float) -> str | None:
    """The `GREATER_EQUAL_THAN` bound for a poll: cursor minus the lookback."""
    if cursor is None:
        return None
    start = parse_last_update(cursor) - timedelta(seconds=lookback_seconds)
    return format_last_update(start)


def advance(cursor: str | None, seen: Iterable[str]) -> str | None:
    """The newest of the cursor and the values seen; never moves backward."""
    best = cursor
    best_moment = parse_last_update(cursor) if cursor is not None else None
    for value in seen:
        moment = parse_last_update(value)
        if best_moment is None or moment > best_moment:
            best, best_moment = value, moment
    return best


def in_window(value: str, start: str | None) -> bool:
    """True when `value` is at or after the window start (None: no bound)."""
    if start is None:
        return True
    return parse_last_update(value) >= parse_last_update(start)


def accurate_now(zone: str, now: datetime | None = None) -> datetime:
    """The wall clock in Accurate's zone, naive, from an aware UTC instant."""
    instant = now if now is not None else datetime.now(UTC)
    return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    """An aware instant as ISO 8601 in UTC, the form stored in SQLite."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
