"""Accurate's lastUpdate values: strict parsing and zone-free cursor arithmetic."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.timefmt import (
    BadTimestamp,
    advance,
    format_last_update,
    parse_last_update,
    window_start,
)

moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31))


@given(moments)
def test_c06_format_of_parse_is_identity(moment: datetime) -> None:
    """Every value Accurate can write survives a round trip unchanged."""
    text = format_last_update(moment.replace(microsecond=0))

    assert format_last_update(parse_last_update(text)) == text


@given(moments, st.integers(min_value=0, max_value=3600))
def test_c06_document_one_second_after_cursor_is_inside_window(
    moment: datetime, lookback: int
) -> None:
    """The filter is the cursor minus the lookback, with no zone conversion."""
    cursor = format_last_update(moment.replace(microsecond=0))
    start = window_start(cursor, lookback)
    assert start is not None

    later = parse_last_update(cursor) + timedelta(seconds=1)

    assert parse_last_update(start) <= later
    assert parse_last_update(cursor) - parse_last_update(start) == timedelta(
        seconds=lookback
    )


def test_c06_window_is_cursor_minus_lookback_in_accurate_wall_clock() -> None:
    assert window_start("01/02/2026 10:00:00", 300) == "01/02/2026 09:55:00"


def test_c08_day_first() -> None:
    """`01/02/2026` is the first of February, never the second of January."""
    assert parse_last_update("01/02/2026 10:00:00") == datetime(2026, 2, 1, 10)
    assert parse_last_update("13/02/2026 09:00:00") == datetime(2026, 2, 13, 9)


@pytest.mark.parametrize(
    "value",
    ["2026-02-01 10:00", "1/2/2026 10:00:00", "32/01/2026 10:00:00", "", None, 5],
)
def test_c08_malformed_values_are_refused(value: object) -> None:
    with pytest.raises(BadTimestamp):
        parse_last_update(value)


def test_c08_cursor_never_moves_backward() -> None:
    cursor = "13/02/2026 09:00:00"

    assert advance(cursor, ["01/02/2026 10:00:00"]) == cursor
    assert advance(cursor, ["14/02/2026 00:00:00"]) == "14/02/2026 00:00:00"
    assert advance(None, []) is None


def test_c03_cursor_is_the_largest_value_seen_not_a_clock() -> None:
    seen = ["01/02/2026 10:00:10", "01/02/2026 09:59:00"]

    assert advance("01/02/2026 09:00:00", seen) == "01/02/2026 10:00:10"
