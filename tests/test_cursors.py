"""Cursors and change detection, end to end (cases C01 to C03, C06, C08).

C05, an unsorted list and a kill after its first page, is in test_crash.py.

Each poll lists a kind's documents from its cursor minus the lookback, so
documents that tie the cursor, that show up late, or that move between pages
while the list is read are still found; a cursor is the newest `lastUpdate`
seen in a window read completely, never a clock reading.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
import structlog
from harness import mismatches
from sync_cases import (
    case_config,
    clock_of,
    cursor_of,
    engine_for,
    forstok_requests,
    on_hand,
    pushes_of,
    sell,
    settle,
    wait_for,
    while_held,
    wib,
)

from daemon.simulator.accurate import LineSpec
from daemon.simulator.app import Simulator
from daemon.simulator.config import SimConfig
from daemon.simulator.faults import FaultAction, FaultPlan, FaultRule

SHELF = {f"P{n:02d}": 10 for n in range(1, 14)}
"""Thirteen items, one per document, for the paging tests."""


@pytest.fixture
def sim_config() -> SimConfig:
    return case_config({"A": 10, "B": 6, "C": 10, "D": 10, "E": 10, **SHELF})


async def test_c01_document_tying_the_cursor_is_found(
    sim: Simulator, tmp_path: Path
) -> None:
    """A document committed after a poll, in the very second of the cursor that
    poll saved, is processed by the next poll, even with no lookback at all;
    the first one is not pushed again."""
    async with engine_for(sim, tmp_path, lookback="0s") as h:
        await settle(h)
        sell(sim, "SI-1", "A", 1, "01/02/2026 10:00:00")
        await h.engine.poll()
        assert await cursor_of(h) == "01/02/2026 10:00:00"

        sell(sim, "SI-2", "B", 2, "01/02/2026 10:00:00")
        await h.engine.poll()

        assert on_hand(sim, "B") == 4
        assert on_hand(sim, "A") == 9
        assert pushes_of(sim, "A") == [10, 9]


async def test_c02_idle_polls_send_nothing_and_keep_the_cursor(
    sim: Simulator, tmp_path: Path
) -> None:
    """Re-reading the documents at the cursor costs no Forstok request and
    leaves the cursor where it is."""
    async with engine_for(sim, tmp_path, lookback="0s") as h:
        await settle(h)
        sell(sim, "SI-1", "A", 1, "01/02/2026 10:00:00")
        await h.engine.poll()
        assert on_hand(sim, "A") == 9
        before = forstok_requests(sim)

        for _ in range(3):
            await h.engine.poll()

        assert forstok_requests(sim) == before
        assert await cursor_of(h) == "01/02/2026 10:00:00"


async def test_c03_cursor_is_the_newest_value_seen_never_a_clock(
    sim: Simulator, tmp_path: Path
) -> None:
    """A document stamped during a poll but committed after it is found by the
    next poll, because the saved cursor is the newest `lastUpdate` listed."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-4", "C", 1, "01/02/2026 10:00:20")
        sell(sim, "SI-3", "C", 1, "01/02/2026 10:00:10", visible_in_s=30)

        await h.engine.poll()
        assert await cursor_of(h) == "01/02/2026 10:00:20"
        assert on_hand(sim, "C") == 9

        clock_of(sim).advance(60)
        await h.engine.poll()

        assert on_hand(sim, "C") == 8


async def test_c06_filter_is_the_cursor_string_minus_the_lookback(
    sim: Simulator, tmp_path: Path
) -> None:
    """The window starts exactly at the cursor minus the lookback, in
    Accurate's own wall clock: a document one second inside is found, one
    second outside is not, and one after the cursor is."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-0", "A", 1, "01/02/2026 10:00:00")
        await h.engine.poll()

        sell(sim, "SI-4", "E", 1, "01/02/2026 10:05:00")
        sell(sim, "SI-5", "B", 1, "01/02/2026 09:55:00")
        sell(sim, "SI-6", "C", 1, "01/02/2026 09:54:59")
        await h.engine.poll()

        assert on_hand(sim, "E") == 9
        assert on_hand(sim, "B") == 5
        assert on_hand(sim, "C") == 10


@pytest.mark.parametrize(
    "zone", ["Asia/Jakarta", "UTC", "America/Los_Angeles", "Asia/Tokyo"]
)
async def test_c06_stamps_in_any_zone_are_followed_to_the_second(
    sim: Simulator, tmp_path: Path, zone: str
) -> None:
    """Whatever zone Accurate stamps in, the cursor is its exact string and a
    document one second after the cursor is processed."""
    sim.config.accurate.zone = zone
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        first = sell(sim, "SI-1", "A", 1, None)
        await h.engine.poll()
        stamp = first.last_update.strftime("%d/%m/%Y %H:%M:%S")
        assert await cursor_of(h) == stamp

        clock_of(sim).advance(1)
        sell(sim, "SI-2", "B", 1, None)
        await h.engine.poll()

        assert on_hand(sim, "B") == 5
        assert mismatches(sim) == {}


async def test_c08_day_first_dates_and_a_cursor_that_never_goes_back(
    sim: Simulator, tmp_path: Path
) -> None:
    """`01/02/2026` is 1 February and `13/02/2026` parses; a document listed
    with an older stamp never moves the cursor backward."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-1", "A", 1, "01/02/2026 10:00:00")
        sell(sim, "SI-2", "B", 1, "13/02/2026 09:00:00")
        await h.engine.poll()
        assert await cursor_of(h) == "13/02/2026 09:00:00"

        sell(sim, "SI-3", "C", 1, "13/02/2026 08:59:00")
        await h.engine.poll()

        assert await cursor_of(h) == "13/02/2026 09:00:00"
        assert mismatches(sim) == {}


async def test_c08_malformed_value_holds_its_kind_and_skips_no_data(
    sim: Simulator, tmp_path: Path
) -> None:
    """A `lastUpdate` not in Accurate's format holds that kind's cursor and is
    logged naming kind, document and value; the document is still read, and
    other kinds keep syncing."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-1", "A", 1, "01/02/2026 10:00:00")
        await h.engine.poll()
        odd = sell(sim, "SI-9", "B", 2, "01/02/2026 10:10:00")
        sim.accurate.create_document(
            "delivery-order",
            [LineSpec("C", 3, "GDG-1")],
            number="DO-1",
            last_update="01/02/2026 10:20:00",
        )
        sim.install_faults(_listed_with_stamp(odd.id, "SI-9", "2026-02-01 10:00"))

        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as events:
            await h.engine.poll()

        assert await cursor_of(h) == "01/02/2026 10:00:00"
        assert await cursor_of(h, "delivery_order") == "01/02/2026 10:20:00"
        assert on_hand(sim, "B") == 4
        assert on_hand(sim, "C") == 7
        (error,) = [e for e in events if e["event"] == "last_update_unparsable"]
        assert error["log_level"] == "error"
        assert error["kind"] == "sales_invoice"
        assert (error["document"], error["value"]) == ("SI-9", "2026-02-01 10:00")

        await h.engine.poll()
        assert await cursor_of(h) == "01/02/2026 10:10:00"


def _listed_with_stamp(doc_id: int, number: str, stamp: str) -> FaultPlan:
    """The next sales-invoice list shows one document with this `lastUpdate`."""
    body = {
        "s": True,
        "d": [
            {
                "id": doc_id,
                "number": number,
                "lastUpdate": stamp,
                "optLock": 0,
                "transDate": "01/02/2026",
            }
        ],
        "sp": {"page": 1, "pageSize": 5, "pageCount": 1, "rowCount": 1},
    }
    action = FaultAction("status", status=200, body=json.dumps(body))
    rule = FaultRule(action, "accurate", "*/sales-invoice/list.do", count=1)
    return FaultPlan([rule])


async def test_lookback_applies_to_every_poll(sim: Simulator, tmp_path: Path) -> None:
    """A document that appears late, stamped inside the lookback behind the
    current cursor, is found by a later poll, not only by the first."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-1", "A", 1, "01/02/2026 10:00:00")
        await h.engine.poll()
        sell(sim, "SI-2", "B", 1, "01/02/2026 10:03:00")
        await h.engine.poll()
        assert await cursor_of(h) == "01/02/2026 10:03:00"

        sell(sim, "SI-3", "C", 1, "01/02/2026 10:01:00")
        await h.engine.poll()

        assert on_hand(sim, "C") == 9
        assert mismatches(sim) == {}


async def test_late_commit_within_the_lookback_is_found(
    sim: Simulator, tmp_path: Path
) -> None:
    """Accurate commits a document two minutes after its stamp; meanwhile a
    newer one moved the cursor past it; the poll after the commit finds it."""
    clock = clock_of(sim)
    clock.set(wib("01/02/2026 10:00:00"))
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sim.config.accurate.late_commit_s = 120
        sell(sim, "SI-5", "A", 2, None)
        sim.config.accurate.late_commit_s = 0
        clock.advance(30)
        sell(sim, "SI-6", "B", 1, None)
        await h.engine.poll()
        assert await cursor_of(h) == "01/02/2026 10:00:30"
        assert on_hand(sim, "A") == 10

        clock.advance(120)
        await h.engine.poll()

        assert on_hand(sim, "A") == 8
        assert mismatches(sim) == {}


async def test_first_documents_of_an_empty_kind_are_all_read(
    sim: Simulator, tmp_path: Path
) -> None:
    """A kind that had no documents when the cursors started gets its first
    ones an hour apart: all of them are processed, not only the newest."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-1", "A", 1, "01/02/2026 09:00:00")
        sell(sim, "SI-2", "B", 1, "01/02/2026 10:00:00")

        await h.engine.poll()

        assert (on_hand(sim, "A"), on_hand(sim, "B")) == (9, 5)
        assert await cursor_of(h) == "01/02/2026 10:00:00"


def _window_of_twelve(sim: Simulator) -> dict[str, int]:
    """SI-101..SI-112 sell one each of P01..P12 at 10:00..10:11; their ids."""
    return {
        f"SI-{100 + n}": sell(
            sim, f"SI-{100 + n}", f"P{n:02d}", 1, f"01/02/2026 10:{n - 1:02d}:00"
        ).id
        for n in range(1, 13)
    }


async def test_document_shifted_between_pages_is_found_by_the_re_read(
    sim: Simulator, tmp_path: Path
) -> None:
    """An edit while the list is paged moves a row off page 1, so the first
    row of page 2 slides onto page 1 unseen; the re-read of the same window
    at the end of the listing finds it within the same poll."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-0", "P13", 1, "01/02/2026 09:59:00")
        await h.engine.poll()
        ids = _window_of_twelve(sim)
        page_two = sim.when_request("accurate", "*/sales-invoice/list.do", nth=2)

        def edit_first() -> None:
            sim.accurate.edit_document(
                "sales-invoice", ids["SI-101"], last_update="01/02/2026 10:30:00"
            )

        await while_held(page_two, h.engine.poll(), edit_first)

        assert mismatches(sim) == {}


async def test_document_shifted_in_both_passes_is_found_by_the_next_poll(
    sim: Simulator, tmp_path: Path
) -> None:
    """Edits during both the listing and its re-read make one document slide
    past a page boundary twice; the cursor stays behind what moved, so the
    next poll's lookback still covers and finds it."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-0", "P13", 1, "01/02/2026 09:59:00")
        await h.engine.poll()
        ids = _window_of_twelve(sim)
        listing = "*/sales-invoice/list.do"
        pass_one_page_two = sim.when_request("accurate", listing, nth=2)
        pass_two_page_one = sim.when_request("accurate", listing, nth=4)
        pass_two_page_two = sim.when_request("accurate", listing, nth=5)

        def edit(number: str, at: str) -> None:
            sim.accurate.edit_document("sales-invoice", ids[number], last_update=at)

        async def poll_with_moves() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(h.engine.poll)
                await wait_for(pass_one_page_two)
                edit("SI-101", "01/02/2026 10:30:00")
                pass_one_page_two.release()
                await wait_for(pass_two_page_one)
                sell(sim, "SI-200", "P13", 1, "01/02/2026 10:01:30")
                pass_two_page_one.release()
                await wait_for(pass_two_page_two)
                edit("SI-102", "01/02/2026 10:31:00")
                pass_two_page_two.release()

        await poll_with_moves()
        await h.engine.poll()

        assert on_hand(sim, "P05") == 9
        assert mismatches(sim) == {}


async def test_edit_moving_a_line_refreshes_the_old_pair(
    sim: Simulator, tmp_path: Path
) -> None:
    """An edit that moves a line to another item, then to another warehouse,
    re-reads the pair it left as well as the new one, at the next poll."""
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        doc = sell(sim, "SI-50", "A", 1, "01/02/2026 10:00:00")
        await h.engine.poll()
        assert on_hand(sim, "A") == 9

        sim.accurate.edit_document(
            "sales-invoice",
            doc.id,
            lines=[LineSpec("B", 1, "GDG-1")],
            last_update="01/02/2026 10:01:00",
        )
        await h.engine.poll()
        assert (on_hand(sim, "A"), on_hand(sim, "B")) == (10, 5)

        sim.accurate.edit_document(
            "sales-invoice",
            doc.id,
            lines=[LineSpec("B", 1, "GDG-2")],
            last_update="01/02/2026 10:02:00",
        )
        await h.engine.poll()
        assert (on_hand(sim, "B", 1), on_hand(sim, "B", 2)) == (6, 0)
        assert mismatches(sim) == {}


async def test_filter_accurate_ignores_is_noticed_and_applied_on_our_side(
    sim: Simulator, tmp_path: Path
) -> None:
    """When the list ignores `filter.lastUpdate`, rows outside the window are
    dropped on our side, the fact is logged once, and each document is still
    read exactly once."""
    sim.config.accurate.kinds_without_last_update_filter = frozenset({"sales-invoice"})
    async with engine_for(sim, tmp_path) as h:
        await settle(h)
        sell(sim, "SI-1", "A", 1, "01/02/2026 09:00:00")
        sell(sim, "SI-2", "B", 1, "01/02/2026 10:00:00")
        await h.engine.poll()
        sell(sim, "SI-3", "C", 1, "01/02/2026 10:30:00")

        with structlog.testing.capture_logs() as events:
            await h.engine.poll()
            await h.engine.poll()

        assert [e["event"] for e in events].count("filter_ignored") == 1
        assert sim.requests.count("accurate", "*/sales-invoice/detail.do") == 3
        assert mismatches(sim) == {}
