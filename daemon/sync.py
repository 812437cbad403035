"""The sync logic: find what changed in Accurate, re-read it, push it to Forstok.

    poll     list each kind's documents since its cursor (minus the lookback),
             read the new or changed ones, queue the (item, warehouse) pairs
             they touch, and move the cursor, in one transaction
    refresh  read the queued pairs' absolute stock from Accurate
    push     compute each Forstok (SKU, warehouse) quantity from the newest
             readings and send the ones that differ from what Forstok holds
    full     read every mapped warehouse's whole stock list and push what
             differs: the net under deletes and anything a poll cannot see

Documents only tell us what to re-read; the quantity pushed is always the
absolute stock Accurate reports, so replaying any step is harmless.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from daemon.accurate import (
    AccurateClient,
    Filter,
    ItemBalances,
    StockPage,
    WarehouseBalance,
)
from daemon.config import Settings, WarehouseMapping
from daemon.errors import (
    CredentialError,
    MalformedRecord,
    MalformedResponse,
    NotFound,
    PermanentError,
    RetriableError,
    ServiceError,
)
from daemon.forstok import ForstokClient, QuantityRow
from daemon.http import RateLimiter
from daemon.kinds import (
    ALL_WAREHOUSES,
    DOCUMENT_KINDS,
    ChangeFeed,
    DocumentKind,
    MalformedDocument,
    Pair,
)
from daemon.logs import new_run_id
from daemon.mapping import (
    Item,
    MappingResult,
    changed_targets,
    offered_quantity,
    resolve_mapping,
    stale_skus,
)
from daemon.state import (
    DocumentRecord,
    Failing,
    Pushed,
    PushRecord,
    QueuedPair,
    QueuedTarget,
    Reading,
    State,
)
from daemon.timefmt import (
    DATE_FORMAT,
    BadTimestamp,
    accurate_now,
    advance,
    format_date,
    format_last_update,
    in_window,
    iso_utc,
    parse_last_update,
    utc_now,
    window_start,
)

log = structlog.get_logger("daemon.sync")

DOCUMENT_FIELDS = ("id", "number", "lastUpdate", "optLock", "transDate")
ITEM_FIELDS = ("id", "no", "name", "itemType", "suspended", "lastUpdate", "optLock")
TRANS_DATE_DAYS = 7
REFRESH_BATCH = 500
MAX_ROW_RETRIES = 3
"""A rejected row is tried again this many times, with backoff, then held."""
AHEAD_WARNING = timedelta(minutes=10)
DOCUMENT_MEMORY = timedelta(days=35)
FIRST_CURSOR = "01/01/2000 00:00:00"
"""The cursor of a kind that had no documents: older than any document."""
DISPLAY_INTERVAL = 0.5
"""Seconds between updates of a progress display."""

Progress = Callable[[str], None]
PUSH_COUNTS = ("pushed", "would_push", "unchanged", "rejected", "held", "unmapped")
"""The counters of the push step, which the daemon reports on their own."""


@dataclass
class Counts:
    """Counters of one poll or full sync, logged in its summary line."""

    documents: int = 0
    pairs_queued: int = 0
    pairs_read: int = 0
    pushed: int = 0
    would_push: int = 0
    """Rows a dry run logged instead of sending."""
    unchanged: int = 0
    rejected: int = 0
    held: int = 0
    unmapped: int = 0
    skipped: int = 0
    errors: int = 0
    pages: int = 0

    def as_dict(self, pushes: bool = True) -> dict[str, int]:
        """Every counter; without `pushes`, only those of reading (a poll
        whose pushing runs apart, as in the daemon)."""
        counts = dict(vars(self))
        if pushes:
            return counts
        return {k: v for k, v in counts.items() if k not in PUSH_COUNTS}

    def found_work(self) -> bool:
        return bool(
            self.documents
            or self.pairs_read
            or self.pushed
            or self.would_push
            or self.rejected
            or self.errors
        )


@dataclass
class Availability:
    """Logs a service going down and coming back once, not on every failure."""

    down_event: str
    up_event: str
    down_since: float | None = None

    def failed(self, error: ServiceError) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning(self.down_event, error=str(error))

    def succeeded(self) -> None:
        if self.down_since is not None:
            down_s = round(time.monotonic() - self.down_since, 1)
            self.down_since = None
            log.info(self.up_event, down_s=down_s)


@dataclass(frozen=True)
class PushProblem:
    """Why pushes cannot be sent now, kept for `stocksync status`."""

    event: str
    """As logged: forstok_unavailable, forstok_credentials_rejected, push_failed."""
    error: str
    since: str
    """UTC, the first failure of this kind in a row."""
    until: str | None = None
    """UTC, when paused pushes are tried again (refused credentials)."""


@dataclass
class Warehouses:
    """The configured warehouses that exist in Accurate, by Accurate id."""

    sources: dict[int, WarehouseMapping] = field(default_factory=dict)
    feeds: dict[int, list[int]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def forstok_targets(self, accurate_ids: Iterable[int]) -> set[int]:
        return {
            self.sources[wid].forstok_id for wid in accurate_ids if wid in self.sources
        }


class Engine:
    """Runs polls, refreshes, pushes and full syncs against one state file."""

    def __init__(
        self,
        settings: Settings,
        state: State,
        accurate: AccurateClient,
        forstok: ForstokClient,
        *,
        dry_run: bool | None = None,
        forstok_pace: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.accurate = accurate
        self.forstok = forstok
        self.forstok_pace = forstok_pace
        """The Forstok client's limiter, if the caller shares it: a push then
        waits for its turn before it takes rows from the queue."""
        self.dry_run = settings.sync.dry_run if dry_run is None else dry_run
        self.warehouses = Warehouses()
        self.mapping = MappingResult()
        self._mapping_version: str | None = None
        self._sku_items: dict[str, int] = {}
        self._reported: set[tuple[str, ...]] = set()
        self._negative_said: dict[tuple[str, int], Decimal] = {}
        self._push_lock = anyio.Lock()
        self._push_again = False
        self._push_short = False
        self._refresh_lock = anyio.Lock()
        self._accurate_health = Availability(
            "accurate_unavailable", "accurate_available"
        )
        self._forstok_health = Availability("forstok_unavailable", "forstok_available")
        self._forstok_paused_until = 0.0
        self.push_problem: PushProblem | None = None
        self._filter_ignored: set[str] = set()
        self.on_targets_queued: Callable[[], None] | None = None
        """Called when a refresh has queued pushes (the daemon wakes its pusher)."""

    # -- set-up ---------------------------------------------------------------

    async def prepare(self) -> None:
        """Learn the warehouses and the mapping before the first poll."""
        newest = await self.state.newest_reading_stamp()
        if newest is not None:
            self.accurate.date_answers_after(datetime.fromisoformat(newest))
        await self.load_warehouses()
        await self.reload_mapping()

    async def load_warehouses(self) -> None:
        found = await self._accurate(self.accurate.list_warehouses())
        await self.state.set_warehouses((w.id, w.name, w.suspended) for w in found)

        by_name = {w.name: w for w in found}
        result = Warehouses()
        for mapping in self.settings.warehouses:
            warehouse = by_name.get(mapping.accurate)
            if warehouse is None or warehouse.suspended:
                why = "suspended" if warehouse else "not found in Accurate"
                log.error(
                    "warehouse_missing",
                    warehouse=mapping.accurate,
                    forstok_warehouse=mapping.forstok_id,
                    why=why,
                    action="rename it in config.yaml to an existing Accurate "
                    "warehouse, or remove it; its pairs are not pushed",
                )
                result.missing.append(mapping.accurate)
                continue
            result.sources[warehouse.id] = mapping
            result.feeds.setdefault(mapping.forstok_id, []).append(warehouse.id)
        self._block_incomplete_feeds(result)
        self.warehouses = result

    def _block_incomplete_feeds(self, result: Warehouses) -> None:
        """A Forstok warehouse fed by a missing warehouse is not pushed at all:
        the sum of the warehouses left would be a wrong number, not a late one."""
        for mapping in self.settings.warehouses:
            if mapping.accurate not in result.missing:
                continue
            if result.feeds.pop(mapping.forstok_id, []):
                log.error(
                    "forstok_warehouse_blocked",
                    forstok_warehouse=mapping.forstok_id,
                    missing=mapping.accurate,
                )

    async def reload_mapping(self, requeue_reason: str | None = None) -> None:
        """Resolve the mapping from the state. With a reason, queue fresh reads
        of the items whose SKU or pack size changed, so that Forstok follows."""
        self._mapping_version = await self.state.get_meta("mapping_version")
        items = await self.state.items()
        overrides = await self.state.overrides()
        forstok_skus = await self.state.forstok_skus()
        before = self.mapping
        self.mapping = resolve_mapping(items, overrides, forstok_skus)
        self._sku_items = {t.sku: t.item_id for t in self.mapping.targets.values()}
        self._report_problems()
        changed = changed_targets(before, self.mapping)
        if requeue_reason:
            await self._report_dropped_skus(before)
        if requeue_reason and changed:
            await self.state.queue_pairs(
                dict.fromkeys(((i, ALL_WAREHOUSES) for i in changed), requeue_reason)
            )
            log.info("mapping_changed", items=len(changed), reason=requeue_reason)

    async def _report_dropped_skus(self, before: MappingResult) -> None:
        """A SKU we pushed that no item maps to any more (its item renamed,
        deleted or mapped elsewhere) keeps its last quantity in Forstok:
        nothing is pushed to it, as nothing in Accurate says what it holds
        now, so the operator is told at once."""
        now = {t.sku for t in self.mapping.targets.values()}
        dropped = {t.sku: t for t in before.targets.values() if t.sku not in now}
        if not dropped:
            return
        successors = {t.item_id: t.sku for t in self.mapping.targets.values()}
        for (sku, warehouse), quantity in (await self.state.pushed_of(dropped)).items():
            old = dropped[sku]
            log.warning(
                "sku_no_longer_synced",
                sku=sku,
                forstok_warehouse=warehouse,
                last_pushed=quantity,
                item=old.item_id,
                now_synced_as=successors.get(old.item_id),
                action="Forstok keeps this quantity; set it to 0 or delete the "
                "listing in Forstok, or map the SKU to an item again",
            )

    async def reload_mapping_if_imported(self) -> None:
        """Pick up a `stocksync mapping import` made while the daemon runs."""
        if await self.state.get_meta("mapping_version") != self._mapping_version:
            await self.reload_mapping("mapping imported")

    def _report_problems(self) -> None:
        for problem in self.mapping.problems:
            key = (problem.kind, *problem.item_nos, *problem.skus)
            if key in self._reported or problem.kind == "excluded":
                continue
            self._reported.add(key)
            level = log.warning if problem.kind == "conflict" else log.info
            level(
                f"mapping_{problem.kind}",
                items=list(problem.item_nos),
                detail=problem.detail,
            )

    # -- poll -------------------------------------------------------------------

    async def poll(self, *, push: bool = True) -> Counts:
        """One incremental pass: every kind, then refresh, then (unless the
        caller pushes on its own schedule) push."""
        run_id = new_run_id()
        counts = Counts()
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(run_id=run_id):
            await self.state.start_run(run_id, "poll")
            try:
                await self.reload_mapping_if_imported()
                failures: _KindFailures = {}
                await self._poll_items(counts, failures)
                # Every kind at once: the list calls wait their turns in the
                # Accurate limiter, and the detail and stock reads of a kind
                # listed early go before the list calls still waiting there
                # (they are URGENT), so a change waits for no other kind.
                async with _tasks() as tg:
                    for kind in DOCUMENT_KINDS:
                        tg.start_soon(
                            self._poll_kind_safely,
                            kind,
                            counts,
                            failures,
                            name=kind.name,
                        )
                _log_kind_failures(failures)
                await self.refresh(counts)
                if push:
                    await self.push(counts)
            finally:
                with anyio.CancelScope(shield=True):
                    outcome = "errors" if counts.errors else "ok"
                    await self.state.finish_run(
                        run_id, outcome, counts.as_dict(push), None
                    )
            self._log_summary("poll_finished", counts, started, pushes=push)
        return counts

    async def _poll_kind_safely(
        self, kind: DocumentKind, counts: Counts, failures: _KindFailures
    ) -> None:
        with structlog.contextvars.bound_contextvars(kind=kind.name):
            try:
                queued = counts.pairs_queued
                await self.poll_kind(kind, counts)
                if counts.pairs_queued > queued:
                    # Read what this kind found now, not after every kind.
                    await self.refresh(counts)
            except ServiceError as error:
                counts.errors += 1
                _note_failure(failures, kind.name, error)

    async def poll_kind(self, kind: DocumentKind, counts: Counts) -> None:
        if kind.feed is ChangeFeed.TRANS_DATE:
            start, listing = None, await self._list_trans_date_window(kind)
        else:
            cursors = await self.state.cursors()
            cursor = cursors.get(kind.name)
            if cursor is None:
                cursor = await self._bootstrap_cursor(kind)
            start = window_start(cursor, self.settings.sync.lookback)
            listing = await self._list_since(kind, start)

        listed, cursor_ok = self._check_rows(kind, listing.rows, start)
        known = await self.state.documents(kind.name, ids=listed)
        changed = {
            doc_id: row
            for doc_id, row in listed.items()
            if doc_id not in known
            or not known[doc_id].same_version(str(row["lastUpdate"]), _opt_lock(row))
        }
        vanished = await self._vanished(kind, start, listed)

        records, pairs, deleted, held = await self._read_documents(kind, changed, known)
        for doc in vanished.values():
            deleted.append(doc.id)
            pairs.update(dict.fromkeys(doc.pairs, f"{kind.name} {doc.number} deleted"))

        cursor_value = None
        if cursor_ok and not held and kind.feed is not ChangeFeed.TRANS_DATE:
            current = (await self.state.cursors()).get(kind.name)
            cursor_value = _held_back(
                current,
                advance(current, [str(r["lastUpdate"]) for r in listed.values()]),
                listing.moved_since,
            )
        await self.state.record_documents(
            kind.name, records, deleted, pairs, cursor_value
        )

        counts.documents += len(records) + len(deleted)
        counts.pairs_queued += len(pairs)
        if records or deleted:
            log.info(
                "documents_found",
                changed=len(records),
                deleted=len(deleted),
                pairs=len(pairs),
                cursor=cursor_value,
            )

    async def _bootstrap_cursor(self, kind: DocumentKind) -> str:
        """Start a kind's cursor at its newest document, never at a clock.

        The poll then reads the lookback window behind it as usual, so the
        newest documents are processed; everything older is covered by the
        full sync that runs on a new state. The list's sort may be ignored;
        then the cursor starts older than it could, which only costs a longer
        first poll. A kind with no documents yet starts at `FIRST_CURSOR`:
        its first documents come after the full sync, so every one of them
        must be read, however far apart they are.
        """
        page = await self._accurate(
            self.accurate.list_page(
                kind.module,
                fields=("id", "lastUpdate"),
                sort="lastUpdate|desc;id|desc",
            )
        )
        seen = []
        for row in page.rows:
            try:
                parse_last_update(row.get("lastUpdate"))
            except BadTimestamp:
                continue
            seen.append(str(row["lastUpdate"]))
        cursor = advance(None, seen) or FIRST_CURSOR
        await self.state.record_documents(kind.name, [], [], {}, cursor)
        log.info("cursor_started", cursor=cursor)
        return cursor

    async def _list_since(self, kind: DocumentKind, start: str | None) -> _Listing:
        """All rows changed since `start`, read twice if they span pages."""
        filters = []
        if start is not None and kind.name not in self._filter_ignored:
            filters.append(Filter("lastUpdate", "GREATER_EQUAL_THAN", (start,)))
        return await self._list_twice(kind.module, filters)

    async def _list_trans_date_window(self, kind: DocumentKind) -> _Listing:
        today = accurate_now(self.settings.accurate.timezone).date()
        first = format_date(today - timedelta(days=TRANS_DATE_DAYS))
        last = format_date(today + timedelta(days=1))
        filters = [Filter("transDate", "BETWEEN", (first, last))]
        return await self._list_twice(kind.module, filters)

    async def _list_twice(self, module: str, filters: Sequence[Filter]) -> _Listing:
        """A listing, and one bounded re-read of it when it spans pages.

        A row edited, deleted or committed late while we page shifts the
        rows behind it across page boundaries, so one of them can be skipped;
        the re-read finds it. If the two passes differ, the data was still
        moving and the re-read may have skipped a row in turn: the listing
        then names the oldest `lastUpdate` that moved, and the cursor stops
        there, so that the next poll's lookback covers what moved.
        """
        rows, pages = await self._list_all(module, filters)
        if pages <= 1:
            return _Listing(rows)
        again, _ = await self._list_all(module, filters)
        moved_since = _oldest_moved(rows, again)
        if moved_since is not None:
            log.info("listing_moved", module=module, moved_since=moved_since)
        return _Listing(_union_by_id(rows, again), moved_since)

    async def _list_all(
        self,
        module: str,
        filters: Sequence[Filter],
        each_page: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Every row, or (with `each_page`) every page handed over as it comes
        and none kept: a catalogue of 50,000 items need not sit in memory."""
        rows: list[dict[str, Any]] = []
        page_number = 1
        while True:
            page = await self._accurate(
                self.accurate.list_page(
                    module,
                    fields=DOCUMENT_FIELDS if module != "item" else ITEM_FIELDS,
                    filters=filters,
                    page=page_number,
                    sort="lastUpdate|asc;id|asc",
                )
            )
            if each_page is None:
                rows.extend(page.rows)
            else:
                await each_page(page.rows)
            if not page.rows or page_number >= page.page_count:
                return rows, page_number
            page_number += 1

    def _check_rows(
        self, kind: DocumentKind, rows: list[dict[str, Any]], start: str | None
    ) -> tuple[dict[int, dict[str, Any]], bool]:
        """Rows inside the window, by id; False when the cursor must hold."""
        listed: dict[int, dict[str, Any]] = {}
        cursor_ok = True
        outside = 0
        newest_allowed = accurate_now(self.settings.accurate.timezone) + AHEAD_WARNING
        for row in rows:
            doc_id = row.get("id")
            if not isinstance(doc_id, int):
                raise MalformedResponse(
                    "accurate", f"{kind.module}/list.do", "row without id"
                )
            value = row.get("lastUpdate")
            try:
                moment = parse_last_update(value)
            except BadTimestamp:
                cursor_ok = False
                log.error(
                    "last_update_unparsable",
                    document=row.get("number", doc_id),
                    value=value,
                    action="the cursor of this kind holds until the value parses",
                )
                listed[doc_id] = row
                continue
            if start is not None and not in_window(str(value), start):
                outside += 1
                continue
            if moment > newest_allowed:
                log.warning(
                    "last_update_ahead",
                    document=row.get("number", doc_id),
                    value=value,
                    hint="check accurate.timezone",
                )
            listed[doc_id] = row
        if outside and kind.name not in self._filter_ignored:
            self._filter_ignored.add(kind.name)
            log.warning(
                "filter_ignored", rows_outside_window=outside, filter="lastUpdate"
            )
        return listed, cursor_ok

    async def _vanished(
        self, kind: DocumentKind, start: str | None, listed: Mapping[int, Any]
    ) -> dict[int, DocumentRecord]:
        """Known documents the window should have listed but did not: deleted."""
        if kind.feed is ChangeFeed.TRANS_DATE:
            known = await self.state.documents(kind.name)
            today = accurate_now(self.settings.accurate.timezone).date()
            first = today - timedelta(days=TRANS_DATE_DAYS)
            return {
                doc_id: doc
                for doc_id, doc in known.items()
                if doc_id not in listed and _date_at_or_after(doc.trans_date, first)
            }
        if start is None:
            return {}
        known = await self.state.documents(kind.name, since=start)
        return {doc_id: doc for doc_id, doc in known.items() if doc_id not in listed}

    async def _read_documents(
        self,
        kind: DocumentKind,
        changed: Mapping[int, dict[str, Any]],
        known: Mapping[int, DocumentRecord],
    ) -> tuple[list[DocumentRecord], dict[Pair, str], list[int], bool]:
        records: list[DocumentRecord] = []
        pairs: dict[Pair, str] = {}
        deleted: list[int] = []
        held = False

        async def read(doc_id: int, row: dict[str, Any]) -> None:
            nonlocal held
            number = str(row.get("number") or doc_id)
            reason = f"{kind.name} {number}"
            old = known.get(doc_id)
            if old is not None:
                pairs.update(dict.fromkeys(old.pairs, reason))
            try:
                detail = await self._accurate(self.accurate.detail(kind.module, doc_id))
                touched = kind.pairs(detail)
            except NotFound:
                if old is not None:
                    deleted.append(doc_id)
                return
            except MalformedDocument as error:
                held = True
                log.error("document_unreadable", document=number, error=str(error))
                return
            pairs.update(dict.fromkeys(touched, reason))
            records.append(
                DocumentRecord(
                    doc_id,
                    number,
                    str(row["lastUpdate"]),
                    _opt_lock(row),
                    frozenset(touched),
                    _text(row.get("transDate")),
                )
            )

        async with _tasks() as tg:
            for doc_id, row in changed.items():
                tg.start_soon(read, doc_id, row)
        return records, pairs, deleted, held

    async def _poll_items(self, counts: Counts, failures: _KindFailures) -> None:
        """New, renamed and suspended items; a changed opening balance."""
        with structlog.contextvars.bound_contextvars(kind="opening_balance"):
            try:
                await self._poll_items_once(counts)
            except ServiceError as error:
                counts.errors += 1
                _note_failure(failures, "opening_balance", error)

    async def _poll_items_once(self, counts: Counts) -> None:
        cursor = (await self.state.cursors()).get("opening_balance")
        start = window_start(cursor, self.settings.sync.lookback)
        filters = (
            []
            if start is None
            else [Filter("lastUpdate", "GREATER_EQUAL_THAN", (start,))]
        )
        listing = await self._list_twice("item", filters)
        rows = listing.rows

        items, pairs, seen, item_versions = [], {}, [], []
        cursor_ok = True
        known = await self.state.documents(
            "opening_balance",
            ids=[r["id"] for r in rows if isinstance(r.get("id"), int)],
        )
        for row in rows:
            item = _item(row)
            if item is None:
                continue
            last_update = str(row.get("lastUpdate"))
            try:
                if not in_window(last_update, start):
                    continue
                seen.append(last_update)
            except BadTimestamp:
                # Read the item all the same; only the cursor waits (C08).
                cursor_ok = False
                log.error(
                    "last_update_unparsable",
                    document=item.no,
                    value=last_update,
                    action="the cursor of this kind holds until the value parses",
                )
            version = (last_update, _opt_lock(row))
            if item.id in known and known[item.id].same_version(*version):
                continue
            items.append((item, _text(row.get("name"))))
            item_versions.append(version)
            pairs[(item.id, ALL_WAREHOUSES)] = f"item {item.no} changed"

        new_cursor = cursor
        if cursor_ok:
            new_cursor = _held_back(cursor, advance(cursor, seen), listing.moved_since)
        if not items and new_cursor == cursor:
            return
        versions = [
            DocumentRecord(
                item.id, item.no, *version, frozenset({(item.id, ALL_WAREHOUSES)})
            )
            for (item, _), version in zip(items, item_versions, strict=True)
        ]
        await self.state.record_items(items, pairs, new_cursor, versions=versions)
        counts.documents += len(items)
        counts.pairs_queued += len(pairs)
        if items:
            # Accurate's numbers are unique: an item the state holds under the
            # number of one just listed was deleted or renamed unseen.
            listed = {item.no: item.id for item, _ in items}
            namesakes = {
                known.id
                for known in await self.state.items_numbered(listed)
                if listed[known.no] != known.id
            }
            await self._settle_items(namesakes, "another item has its number")
            await self.reload_mapping("mapping changed")

    # -- refresh ----------------------------------------------------------------

    async def refresh(self, counts: Counts | None = None) -> None:
        """Read the absolute stock of every queued pair and queue its pushes."""
        counts = counts or Counts()
        async with self._refresh_lock:
            while True:
                pending = await self.state.pending_pairs(limit=REFRESH_BATCH)
                if not pending:
                    return
                if len(pending) == REFRESH_BATCH:
                    # Stock lists may be the cheaper read for the whole queue
                    # though not for one batch (a mapping change, a big opname).
                    everything = await self.state.pending_pairs()
                    if await self._lists_to_read(_by_item(everything)):
                        pending = everything
                await self._refresh_batch(pending, counts)

    async def _refresh_batch(self, pending: list[QueuedPair], counts: Counts) -> None:
        by_item = _by_item(pending)
        results: dict[int, ItemBalances | None] = {}
        lists = await self._lists_to_read(by_item)
        if lists:
            await self._read_stock_lists(lists, by_item, results)

        async def read(item_id: int) -> None:
            try:
                balances = await self._accurate(self.accurate.item_balances(item_id))
            except NotFound:
                log.warning("item_not_found", item=item_id)
                balances = None
            except MalformedRecord as error:
                self._report_unreadable(item_id, error.detail)
                balances = None
            if balances is not None:
                needed = self._needed(by_item[item_id])
                bad = {w: p for w, p in balances.unreadable.items() if w in needed}
                if bad:
                    self._report_unreadable(item_id, "; ".join(bad.values()))
                    balances = None
            results[item_id] = balances

        async with _tasks() as tg:
            for item_id in by_item.keys() - results.keys():
                tg.start_soon(read, item_id)

        readings, targets = [], set()
        reasons: dict[tuple[int, int], set[str]] = {}
        for item_id, balances in results.items():
            if balances is None:
                continue
            # Dated when the answered request was sent. Not when the answer
            # came: one computed before a change may arrive after a newer
            # reading and must not pass for it. Nor when first asked: a read
            # that waited for the limiter or a retry shows changes made
            # meanwhile, which (when no poll sees them, as after a back-dated
            # edit) must not lose to a reading computed before them.
            read_at = iso_utc(balances.sent_at)
            for wb in balances.warehouses:
                if wb.warehouse_id in self.warehouses.sources:
                    readings.append(
                        Reading(item_id, wb.warehouse_id, wb.balance, read_at)
                    )
            for pair in by_item[item_id]:
                for fwh in self.warehouses.forstok_targets(
                    self._touched_warehouses([pair])
                ):
                    targets.add((item_id, fwh))
                    reasons.setdefault((item_id, fwh), set()).add(pair.reason)
        counts.pairs_read += len(readings)
        reason = "; ".join(sorted({p.reason for p in pending}))[:200]
        await self.state.record_readings(
            readings,
            pending,
            targets,
            reason,
            target_reasons={k: "; ".join(sorted(v))[:200] for k, v in reasons.items()},
        )
        if targets and self.on_targets_queued is not None:
            self.on_targets_queued()

    def _report_unreadable(self, item_id: int, problem: str) -> None:
        """Reported and left out, so that one item's bad data holds up no
        other item; its pairs leave the queue, and the next full sync reads
        the item's stock from the warehouse lists instead."""
        target = self.mapping.targets.get(item_id)
        log.error(
            "item_unreadable",
            item=item_id,
            sku=target.sku if target else None,
            error=problem,
            action="nothing is pushed for it until the next full sync reads it "
            "again; check the item's stock in Accurate",
        )

    def _needed(self, pairs: Iterable[QueuedPair]) -> set[int]:
        """The mapped warehouses whose stock these pairs of one item need."""
        return self._touched_warehouses(pairs) & self.warehouses.sources.keys()

    async def _lists_to_read(self, by_item: Mapping[int, list[QueuedPair]]) -> set[int]:
        """The warehouses to read by stock-list pages, if that takes fewer
        requests than one item detail per item; else none.

        Page counts come from the row counts the last full sync saw; a
        warehouse without one is never listed. Lists must save at least one
        round of parallel details (`max_in_flight` requests): below that the
        details cost less than a second of Accurate's budget, answer in one
        round trip, and confirm zeros that a list can only leave out.
        """
        wanted: set[int] = set()
        for pairs in by_item.values():
            wanted |= self._needed(pairs)
        rows = await self.state.warehouse_rows()
        if not wanted or not wanted <= rows.keys():
            return set()
        size = self.settings.accurate.page_size
        pages = sum(max(1, math.ceil(rows[w] / size)) for w in wanted)
        margin = self.settings.accurate.max_in_flight
        return wanted if pages + margin <= len(by_item) else set()

    async def _read_stock_lists(
        self,
        lists: set[int],
        by_item: Mapping[int, list[QueuedPair]],
        results: dict[int, ItemBalances | None],
    ) -> None:
        """Read `lists` page by page and settle every item whose needed
        warehouses all list it; the rest are left to their item detail
        (an item absent from a list may have no stock there, or may not:
        confirm, never assume, a zero)."""
        found: dict[int, dict[int, tuple[Decimal, datetime]]] = defaultdict(dict)
        for warehouse_id in lists:

            def keep(page: StockPage, warehouse_id: int = warehouse_id) -> None:
                for row in page.rows:
                    if row.item_id in by_item:
                        found[row.item_id][warehouse_id] = (row.quantity, page.sent_at)

            await self._each_stock_page(warehouse_id, keep)
        for item_id, pairs in by_item.items():
            needed, have = self._needed(pairs), found.get(item_id, {})
            if not needed <= have.keys():
                continue
            results[item_id] = ItemBalances(
                item_id,
                "",
                "INVENTORY",
                False,
                [WarehouseBalance(w, "", have[w][0], False) for w in needed],
                # The earliest page it came from: never newer than it is.
                # (No needed warehouse: no reading, so no date to give.)
                min((have[w][1] for w in needed), default=_NEVER),
            )

    async def _each_stock_page(
        self, warehouse_id: int, on_page: Callable[[StockPage], None]
    ) -> None:
        """Every stock-list page of a warehouse."""
        first = await self._accurate(self.accurate.list_stock_page(warehouse_id, 1))
        on_page(first)
        pages = iter(range(2, first.page_count + 1))

        async def worker() -> None:
            for number in pages:
                page = await self._accurate(
                    self.accurate.list_stock_page(warehouse_id, number)
                )
                on_page(page)

        async with _tasks() as tg:
            for _ in range(max(1, self.settings.accurate.max_in_flight)):
                tg.start_soon(worker)

    def _touched_warehouses(self, pairs: Iterable[QueuedPair]) -> set[int]:
        touched: set[int] = set()
        for pair in pairs:
            if pair.warehouse_id == ALL_WAREHOUSES:
                touched |= set(self.warehouses.sources)
            else:
                touched.add(pair.warehouse_id)
        return touched

    # -- push -------------------------------------------------------------------

    async def push(
        self, counts: Counts | None = None, *, full_batches: bool = False
    ) -> None:
        """Send every queued target whose quantity differs from Forstok's.

        One pusher at a time, so pushes of one pair are never concurrent; a
        caller that finds it busy leaves a note and the pusher goes round again.
        With `full_batches` (a full sync still reading) a short last batch
        waits for more rows, unless another caller asked for a push meanwhile.
        """
        counts = counts or Counts()
        if self._push_lock.locked():
            self._push_again = True
            self._push_short |= not full_batches
            return
        async with self._push_lock:
            self._push_again = True
            while self._push_again:
                self._push_again = False
                whole = full_batches and not self._push_short
                self._push_short = False
                await self._requeue_due_rows()
                while await self._push_round(counts, whole):
                    self._push_again = True

    async def _push_round(self, counts: Counts, whole: bool = False) -> bool:
        """Push one round of queued targets; False when there is nothing to do
        (with `whole`: nothing more until the queue grows)."""
        if time.monotonic() < self._forstok_paused_until:
            return False
        size = self.settings.forstok.batch_size
        queued = await self._queued_in_turn(size)
        if not queued:
            return False

        plans = await self._plan(queued)
        sendable = [p for p in plans if p.outcome == "send"]
        await self.state.record_pushes(
            [p.record() for p in plans if p.outcome != "send"]
        )
        counts.unchanged += sum(1 for p in plans if p.outcome == "skipped")

        for start in range(0, len(sendable), size):
            batch = sendable[start : start + size]
            if whole and len(batch) < size:
                # Left queued: Forstok's budget is requests, not rows.
                return len(queued) == size * 10
            if not await self._send(batch, counts):
                return False
        return True

    async def _queued_in_turn(self, size: int) -> list[QueuedTarget]:
        """The oldest queued targets; if they fill less than one request,
        read again once Forstok's turn has come, so that rows queued while
        it waits go with it instead of a turn later (1.2 s at 50 a minute).
        A fuller queue is planned while the turn is awaited, as before: a
        full sync's requests then leave one turn apart, not one plan later."""
        queued = await self.state.queued_targets(limit=size * 10)
        pace = None if self.dry_run else self.forstok_pace
        if not queued or len(queued) >= size or pace is None:
            return queued
        await pace.ready()
        return await self.state.queued_targets(limit=size * 10)

    async def _plan(self, queued: list[QueuedTarget]) -> list[_Plan]:
        readings = await self.state.readings(t.item_id for t in queued)
        plans = [self._plan_one(target, readings) for target in queued]

        keys = [(p.sku, p.target.forstok_warehouse) for p in plans if p.sku]
        pushed = await self.state.pushed(keys)
        failing = await self.state.failing(keys)
        unknown = await self.state.unknown_targets()
        now = iso_utc(utc_now())
        seen: set[tuple[str, int]] = set()
        for plan in (p for p in plans if p.outcome == "send"):
            key = (plan.sku, plan.target.forstok_warehouse)
            previous, fail = pushed.get(key), failing.get(key)
            plan.old = previous.quantity if previous else None
            if key in seen or key in unknown or _needless(plan, previous, fail, now):
                plan.outcome = "skipped"
            elif fail and fail.quantity == plan.quantity:
                plan.attempts = fail.attempts
            seen.add(key)
        for plan in plans:
            self._report_negative(plan)
        return plans

    def _report_negative(self, plan: _Plan) -> None:
        """Warn when a pair's stock is found below zero, and again when that
        amount changes; not at every full sync while it stays the same."""
        key = (plan.sku, plan.target.forstok_warehouse)
        if plan.negative is None:
            self._negative_said.pop(key, None)
            return
        if self._negative_said.get(key) == plan.negative:
            return
        self._negative_said[key] = plan.negative
        mapped = self.mapping.targets.get(plan.target.item_id)
        log.warning(
            "negative_stock",
            sku=plan.sku,
            warehouse=plan.target.forstok_warehouse,
            item=mapped.item_no if mapped else None,
            quantity=str(plan.negative),
            pushed=plan.quantity,
        )

    def _plan_one(
        self, target: QueuedTarget, readings: Mapping[Pair, Reading]
    ) -> _Plan:
        mapped = self.mapping.targets.get(target.item_id)
        sources = self.warehouses.feeds.get(target.forstok_warehouse, [])
        if mapped is None or not sources:
            return _Plan(target, "", 0, "", target.reason, "skipped")

        found = [
            readings[(target.item_id, w)]
            for w in sources
            if (target.item_id, w) in readings
        ]
        if not found:
            return _Plan(target, mapped.sku, 0, "", target.reason, "skipped")
        rules = self.warehouses.sources[sources[0]].rules
        quantity = offered_quantity(
            [r.quantity for r in found], mapped.pack_size, rules
        )
        raw_total = sum((r.quantity for r in found), Decimal(0))
        read_at = min(r.read_at for r in found)
        plan = _Plan(target, mapped.sku, quantity, read_at, target.reason, "send")
        plan.negative = raw_total if raw_total < 0 else None
        return plan

    async def _send(self, batch: list[_Plan], counts: Counts) -> bool:
        """Send one request; False when Forstok is unavailable for now."""
        if self.dry_run:
            for plan in batch:
                plan.outcome = "dry_run"
                log.info(
                    "push_dry_run",
                    sku=plan.sku,
                    warehouse=plan.target.forstok_warehouse,
                    quantity=plan.quantity,
                    old=plan.old,
                    reason=plan.reason,
                )
            await self.state.record_pushes([p.record() for p in batch])
            counts.would_push += len(batch)
            return True

        rows = [
            QuantityRow(p.sku, p.target.forstok_warehouse, p.quantity) for p in batch
        ]
        await self.state.mark_sending(
            [
                (r.sku, r.warehouse_id, r.quantity, p.read_at)
                for r, p in zip(rows, batch, strict=True)
            ]
        )
        try:
            report = await self.forstok.push_quantities(rows)
        except RetriableError as error:
            self._forstok_health.failed(error)
            self._push_blocked("forstok_unavailable", error)
            return False
        except CredentialError as error:
            pause = self.settings.accurate.credential_retry_interval
            self._forstok_paused_until = time.monotonic() + pause
            self._push_blocked("forstok_credentials_rejected", error, pause)
            log.error(
                "forstok_credentials_rejected", error=str(error), action=error.action
            )
            return False
        except PermanentError as error:
            log.error("push_failed", error=str(error))
            self._push_blocked("push_failed", error)
            return False
        self._forstok_health.succeeded()
        self.push_problem = None

        rejected = {(r.sku, r.warehouse_id): why for r, why in report.rejected}
        for plan in batch:
            why = rejected.get((plan.sku, plan.target.forstok_warehouse))
            if why is None:
                plan.outcome = "pushed"
                counts.pushed += 1
                continue
            self._reject(plan, why, counts)
        await self.state.record_pushes([p.record() for p in batch])
        pushed = [p for p in batch if p.outcome == "pushed"]
        if pushed:
            log.debug("pushed", rows=len(pushed))
        return True

    def _push_blocked(
        self, event: str, error: ServiceError, pause_s: float | None = None
    ) -> None:
        """Note why pushes stopped; a failure like the last keeps its `since`."""
        now = utc_now()
        last = self.push_problem
        since = last.since if last and last.event == event else iso_utc(now)
        until = None if pause_s is None else iso_utc(now + timedelta(seconds=pause_s))
        self.push_problem = PushProblem(event, str(error), since, until)

    def _reject(self, plan: _Plan, why: str, counts: Counts) -> None:
        plan.attempts += 1
        plan.error = why
        if "not found" in why.lower():
            # Forstok does not know the SKU (or the warehouse): the pair is
            # unmapped until an operator fixes it and runs `stocksync retry`.
            plan.outcome = "unmapped"
            counts.unmapped += 1
            log.error(
                "forstok_sku_unknown",
                sku=plan.sku,
                warehouse=plan.target.forstok_warehouse,
                reason=why,
                action="create the SKU in Forstok or fix the mapping "
                "(`stocksync mapping`), then run `stocksync retry SKU`",
            )
            return
        if plan.attempts > MAX_ROW_RETRIES:
            plan.outcome = "held"
            counts.held += 1
            log.warning(
                "push_held",
                sku=plan.sku,
                warehouse=plan.target.forstok_warehouse,
                quantity=plan.quantity,
                reason=why,
                action="fix the SKU or warehouse in Forstok or the mapping, "
                "then run `stocksync retry`",
            )
            return
        plan.outcome = "rejected"
        counts.rejected += 1
        wait = min(3600.0, 30.0 * 2 ** (plan.attempts - 1)) * random.uniform(0.8, 1.2)
        plan.retry_at = iso_utc(utc_now() + timedelta(seconds=wait))
        log.warning(
            "push_rejected",
            sku=plan.sku,
            warehouse=plan.target.forstok_warehouse,
            attempt=plan.attempts,
            retry_in_s=round(wait),
            reason=why,
        )

    async def _requeue_due_rows(self) -> None:
        now = iso_utc(utc_now())
        due = [
            (self._sku_items[key[0]], key[1])
            for key, fail in (await self.state.failing()).items()
            if not fail.held and fail.retry_at <= now and key[0] in self._sku_items
        ]
        if due:
            await self.state.queue_targets(due, "retry after rejection")

    # -- full sync ----------------------------------------------------------------

    async def full_sync(
        self, reason: str = "scheduled", progress: Progress | None = None
    ) -> Counts:
        """Re-read every mapped warehouse and push every difference."""
        run_id = new_run_id()
        counts = Counts()
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(run_id=run_id):
            log.info("full_sync_started", reason=reason)
            await self.state.start_run(run_id, "full_sync")
            # Stays set if the run is cancelled (SIGTERM), so that an
            # interrupted full sync is never recorded as complete.
            error: str | None = "interrupted"
            try:
                await self._full_sync(counts, progress)
                error = None
            except ServiceError as exc:
                error = str(exc)
                counts.errors += 1
                log.error("full_sync_failed", error=error)
                raise
            finally:
                with anyio.CancelScope(shield=True):
                    outcome, error = await self._full_sync_outcome(error)
                    await self.state.finish_run(
                        run_id, outcome, counts.as_dict(), error
                    )
            self._log_summary(
                "full_sync_finished", counts, started, always=True, outcome=outcome
            )
        return counts

    async def _full_sync_outcome(self, error: str | None) -> tuple[str, str | None]:
        """`failed`, `ok`, or `pushes_not_sent`: all was read, but pushes
        still wait on a Forstok problem (refused credentials, an outage)."""
        if error is not None:
            return "failed", error
        problem = self.push_problem
        if problem is None or not await self.state.count("push_queue"):
            return "ok", None
        return "pushes_not_sent", f"{problem.event}: {problem.error}"

    async def _full_sync(self, counts: Counts, progress: Progress | None) -> None:
        await self.load_warehouses()
        await self._read_item_list()
        await self.state.release_held()
        retention = utc_now() - timedelta(days=self.settings.sync.history_days)
        await self.state.prune_history(iso_utc(retention))
        horizon = accurate_now(self.settings.accurate.timezone) - DOCUMENT_MEMORY
        lookback = self.settings.sync.lookback
        windows = {
            kind: start
            for kind, cursor in (await self.state.cursors()).items()
            if (start := window_start(cursor, lookback)) is not None
        }
        await self.state.prune_documents(format_last_update(horizon), windows)

        reporter = _ProgressReporter(
            self.settings.sync.progress_interval, progress, counts
        )
        shared = self._shared_sources()
        async with _tasks() as tg:
            reading_done = anyio.Event()
            tg.start_soon(self._push_while, reading_done, counts, name="full_sync_push")
            try:
                for warehouse_id in self.warehouses.sources:
                    await self._read_warehouse(
                        warehouse_id, counts, reporter, warehouse_id not in shared
                    )
            finally:
                reading_done.set()
        await self.refresh(counts)
        await self._queue_shared_feeds()
        await self.push(counts)
        # A push already running (the daemon's push task) takes over the rows
        # push() found it busy for: wait for it, so that the outcome knows
        # whether they went out.
        async with self._push_lock:
            pass
        await self._report_stale_skus()
        reporter.done()

    def _shared_sources(self) -> set[int]:
        """Accurate warehouses that feed a Forstok warehouse together with
        others. Their sum is only pushed once every one of them, and every
        absence re-read, is in: pushed page by page it would mix this run's
        reading of one with an older one of another (a transfer between them
        would show its units twice), or miss one on a first run."""
        return {
            warehouse
            for sources in self.warehouses.feeds.values()
            if len(sources) > 1
            for warehouse in sources
        }

    async def _queue_shared_feeds(self) -> None:
        shared = [f for f, sources in self.warehouses.feeds.items() if len(sources) > 1]
        await self.state.queue_targets(
            [
                (item, forstok_id)
                for forstok_id in shared
                for item in self.mapping.targets
            ],
            "full sync",
        )

    async def _push_while(self, done: anyio.Event, counts: Counts) -> None:
        while not done.is_set():
            await self.push(counts, full_batches=True)
            with anyio.move_on_after(0.2):
                await done.wait()

    async def _read_item_list(self) -> None:
        # The item poll skips versions it knows, and on a new state starts at
        # this listing: the stock read next covers every item in it, so the
        # first poll need not list and re-read the whole catalogue.
        newest: str | None = None
        known = await self.state.item_ids()
        listed: set[int] = set()

        async def store(rows: list[dict[str, Any]]) -> None:
            nonlocal newest
            listed.update(r["id"] for r in rows if isinstance(r.get("id"), int))
            read = [(item, row) for row in rows if (item := _item(row))]
            versions = _item_versions(read)
            newest = advance(newest, [v.last_update for v in versions])
            items = [(item, _text(row.get("name"))) for item, row in read]
            await self.state.record_items(items, {}, None, versions=versions)

        await self._list_all("item", [], each_page=store)
        if newest and "opening_balance" not in await self.state.cursors():
            await self.state.record_items([], {}, newest)
        # Not taken as deleted on the listing's word: rows edited while it is
        # paged shift between pages, so a live item can be missed.
        await self._settle_items(known - listed, "missing from the item list")
        await self.reload_mapping()

    async def _settle_items(self, item_ids: set[int], why: str) -> None:
        """Ask Accurate about items the state holds under a number Accurate
        may no longer give them. One that is gone is forgotten (kept, it
        would collide forever with a new item of its number); one renamed is
        stored under its new number and read again."""
        if not item_ids:
            return
        known = {item.id: item for item in await self.state.items()}
        gone, renamed = [], []
        for item_id in sorted(item_ids):
            try:
                found = await self._accurate(self.accurate.item_balances(item_id))
            except NotFound:
                gone.append(item_id)
                continue
            except MalformedRecord as error:
                self._report_unreadable(item_id, error.detail)
                continue
            old = known.get(item_id)
            if old is not None and found.item_no != old.no:
                item = Item(item_id, found.item_no, found.item_type, found.suspended)
                renamed.append(item)

        if gone:
            await self.state.forget_items(gone)
            numbers = [known[i].no for i in gone if i in known]
            log.info("items_deleted", items=numbers, why=why)
        if renamed:
            pairs = {(i.id, ALL_WAREHOUSES): f"item {i.no} renamed" for i in renamed}
            await self.state.record_items([(i, None) for i in renamed], pairs, None)
            log.info("items_renamed", items=[i.no for i in renamed], why=why)

    async def _report_stale_skus(self) -> None:
        """Each full sync names the SKUs `stale_pushes` finds."""
        pushed = await stale_pushes(self.state, self.mapping)
        if pushed:
            log.warning(
                "stale_skus_in_forstok",
                count=len(pushed),
                skus=[f"{sku}@{w}={n}" for (sku, w), n in sorted(pushed.items())][:20],
                action="no Accurate item has these SKUs any more; Forstok keeps "
                "the quantities shown: set them to 0 or delete the listings in "
                "Forstok, or map the SKUs to items again",
            )

    async def _read_warehouse(
        self,
        warehouse_id: int,
        counts: Counts,
        reporter: _ProgressReporter,
        queue: bool = True,
    ) -> None:
        """Read one warehouse's stock list; with `queue`, queue the pushes of
        what it shows as each page comes."""
        with structlog.contextvars.bound_contextvars(warehouse=warehouse_id):
            previous = await self.state.readings_in(warehouse_id)
            first = await self._accurate(self.accurate.list_stock_page(warehouse_id, 1))
            # Each page is dated when its request was sent (see
            # `_refresh_batch`); an absence from the whole list, when the
            # first page's was, which went before all the others.
            listed_at = iso_utc(first.sent_at)
            reporter.add_pages(first.page_count)
            seen: set[int] = set()
            sizes = {first.row_count}
            await self._store_stock_page(
                warehouse_id, first, listed_at, seen, counts, reporter, queue
            )

            pages = iter(range(2, first.page_count + 1))

            async def worker() -> None:
                for number in pages:
                    page = await self._accurate(
                        self.accurate.list_stock_page(warehouse_id, number)
                    )
                    sizes.add(page.row_count)
                    await self._store_stock_page(
                        warehouse_id,
                        page,
                        iso_utc(page.sent_at),
                        seen,
                        counts,
                        reporter,
                        queue,
                    )

            async with _tasks() as tg:
                for _ in range(max(1, self.settings.accurate.max_in_flight)):
                    tg.start_soon(worker)
            await self.state.set_warehouse_rows(warehouse_id, first.row_count)
            # A list that grew or shrank while paged may have skipped a row:
            # then no absence is taken at its word.
            moved = len(sizes) > 1
            await self._confirm_absent(
                warehouse_id, previous, seen, listed_at, moved, queue
            )

    async def _store_stock_page(
        self,
        warehouse_id: int,
        page: Any,
        read_at: str,
        seen: set[int],
        counts: Counts,
        reporter: _ProgressReporter,
        queue: bool = True,
    ) -> None:
        forstok_id = self.warehouses.sources[warehouse_id].forstok_id
        readings, targets = [], []
        for row in page.rows:
            seen.add(row.item_id)
            readings.append(Reading(row.item_id, warehouse_id, row.quantity, read_at))
            if queue and row.item_id in self.mapping.targets:
                targets.append((row.item_id, forstok_id))
        # Listed, so not absent (no zero is taken for it): its detail is read
        # instead, and if that fails too the item is reported and left out.
        recheck = {
            (item_id, warehouse_id): f"full sync: unreadable in stock list ({why})"
            for item_id, why in page.unreadable.items()
        }
        seen.update(page.unreadable)
        await self.state.record_readings(
            readings, [], targets, "full sync", requeue=recheck
        )
        counts.pages += 1
        counts.pairs_read += len(readings)
        reporter.page_done()

    async def _confirm_absent(
        self,
        warehouse_id: int,
        previous: Mapping[int, Reading],
        seen: set[int],
        listed_at: str,
        moved: bool = False,
        queue: bool = True,
    ) -> None:
        """Items missing from the stock list: confirm, never assume, a zero.

        Accurate leaves items without recorded stock out of `list-stock`. An
        item that had stock here is re-read through its detail before a zero
        is pushed; a mapped item never seen here has no stock to confirm,
        unless the list `moved` while it was paged. Its zero is dated when the
        listing began, the earliest moment the absence can stand for, so that
        stock a poll reads meanwhile stays newer.
        """
        absent = [
            item_id
            for item_id in self.mapping.targets
            if item_id not in seen and item_id not in previous
        ]
        recheck = {
            (item_id, warehouse_id): "full sync: absent from stock list"
            for item_id, reading in previous.items()
            if item_id not in seen and reading.quantity != 0
        }
        if moved:
            recheck.update(
                dict.fromkeys(
                    ((item_id, warehouse_id) for item_id in absent),
                    "full sync: absent from a stock list that moved",
                )
            )
            absent = []
        never = [
            Reading(item_id, warehouse_id, Decimal(0), listed_at) for item_id in absent
        ]
        forstok_id = self.warehouses.sources[warehouse_id].forstok_id
        targets = []
        if queue:
            zeros = [
                item_id
                for item_id, reading in previous.items()
                if item_id not in seen and reading.quantity == 0
            ]
            targets = [(r.item_id, forstok_id) for r in never]
            targets += await self._zeros_not_in_forstok(zeros, forstok_id)
        await self.state.record_readings(
            never, [], targets, "full sync", requeue=recheck
        )

    async def _zeros_not_in_forstok(
        self, item_ids: Sequence[int], forstok_id: int
    ) -> list[tuple[int, int]]:
        """Targets of items whose zero stock here was read before (a poll, an
        earlier run) but that Forstok has not been given as 0: a full sync
        reconciles them too. Checked against what was pushed, so that the
        many items that never hold stock here are not queued every night."""
        keys = {
            (target.sku, forstok_id): item_id
            for item_id in item_ids
            if (target := self.mapping.targets.get(item_id)) is not None
        }
        pushed = await self.state.pushed(keys)
        return [
            (item_id, forstok_id)
            for key, item_id in keys.items()
            if key not in pushed or pushed[key].quantity != 0 or not pushed[key].settled
        ]

    # -- helpers ----------------------------------------------------------------

    async def _accurate(self, call: Awaitable[Any]) -> Any:
        try:
            result = await call
        except RetriableError as error:
            self._accurate_health.failed(error)
            raise
        self._accurate_health.succeeded()
        return result

    def _log_summary(
        self,
        event: str,
        counts: Counts,
        started: float,
        always: bool = False,
        pushes: bool = True,
        **extra: Any,
    ) -> None:
        elapsed = round(time.monotonic() - started, 3)
        level = log.info if always or counts.found_work() else log.debug
        level(event, elapsed_s=elapsed, **counts.as_dict(pushes), **extra)


_NEVER = datetime.fromtimestamp(0, UTC)


async def stale_pushes(
    state: State, mapping: MappingResult
) -> dict[tuple[str, int], int]:
    """The last quantity pushed to each SKU that no Accurate item claims any
    more (renamed or deleted items, C14). Forstok keeps it, where it may
    oversell; nothing is pushed to those SKUs. Reads SKU names first, and
    the rows of stale SKUs only: a catalogue's pushed rows are many."""
    numbers, overrides = await state.item_numbers(), await state.overrides()
    stale = stale_skus(await state.pushed_skus(), mapping, numbers, overrides)
    return await state.pushed_of(stale) if stale else {}


_KindFailures = dict[tuple[str, str, str], list[tuple[str, ServiceError]]]
"""A poll's failed kinds by cause: (service, error type, detail) -> kinds."""


def _note_failure(failures: _KindFailures, kind: str, error: ServiceError) -> None:
    cause = (error.service, type(error).__name__, error.detail)
    failures.setdefault(cause, []).append((kind, error))


def _log_kind_failures(failures: _KindFailures) -> None:
    """One line per cause of a poll's failures, naming every kind it stopped.

    Once Accurate's reads are held back (a refused credential, an outage),
    every later kind fails at once for the same cause, each at its own
    endpoint; a line per kind would repeat it seventeen times each poll."""
    for failed in failures.values():
        kinds = [kind for kind, _ in failed]
        first = failed[0][1]
        log.error("poll_kind_failed", kind=kinds[0], kinds=kinds, error=str(first))


@dataclass
class _Plan:
    target: QueuedTarget
    sku: str
    quantity: int
    read_at: str
    reason: str
    outcome: str
    old: int | None = None
    attempts: int = 0
    error: str | None = None
    retry_at: str | None = None
    negative: Decimal | None = None
    """The sum Accurate holds, when it is below zero (and 0 is offered)."""

    def record(self) -> PushRecord:
        return PushRecord(
            self.target,
            self.sku,
            self.quantity,
            self.read_at,
            self.old,
            self.reason,
            self.outcome,
            self.error,
            self.attempts,
            self.retry_at,
        )


class _ProgressReporter:
    """Full-sync progress: logged at intervals, never per page, and shown to
    the caller's display (a terminal, systemd's status line) more often."""

    def __init__(
        self, interval: float, callback: Progress | None, counts: Counts
    ) -> None:
        self.interval = interval
        self.callback = callback
        self.counts = counts
        self.started = time.monotonic()
        self.last = self.started
        self.last_shown = self.started
        self.pages_total = 0
        self.pages_done = 0

    def add_pages(self, pages: int) -> None:
        self.pages_total += pages

    def page_done(self) -> None:
        self.pages_done += 1
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._log(now)
        if now - self.last_shown >= min(self.interval, DISPLAY_INTERVAL):
            self.last_shown = now
            self._show(now)

    def done(self) -> None:
        now = time.monotonic()
        self._log(now)
        self._show(now)

    def _figures(self, now: float) -> dict[str, Any]:
        elapsed = max(now - self.started, 1e-6)
        rate = self.pages_done / elapsed
        remaining = max(0, self.pages_total - self.pages_done)
        percent = (
            round(100 * self.pages_done / self.pages_total) if self.pages_total else 100
        )
        return {
            "pages": self.pages_done,
            "pages_total": self.pages_total,
            "percent": percent,
            "pairs_read": self.counts.pairs_read,
            "pushed": self.counts.pushed,
            "pages_per_s": round(rate, 2),
            "eta_s": math.ceil(remaining / rate) if rate > 0 else None,
        }

    def _log(self, now: float) -> None:
        log.info("full_sync_progress", **self._figures(now))

    def _show(self, now: float) -> None:
        if self.callback is None:
            return
        f = self._figures(now)
        eta = "?" if f["eta_s"] is None else f"{f['eta_s']} s"
        self.callback(
            f"full sync {f['percent']}% ({f['pages']}/{f['pages_total']} pages, "
            f"{f['pairs_read']} pairs read, {f['pushed']} pushed, "
            f"{f['pages_per_s']:.1f} pages/s, ETA {eta})"
        )


@asynccontextmanager
async def _tasks() -> AsyncIterator[TaskGroup]:
    """A task group whose failed call surfaces as its ServiceError.

    anyio wraps whatever a child raises in an ExceptionGroup. Every caller,
    up to the daemon's loops, handles ServiceError; a group of them alone is
    replaced by its first member, so one failed read cannot end the daemon.
    """
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        matched, rest = group.split(ServiceError)
        if matched is None or rest is not None:
            raise
        first: BaseException = matched
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def _needless(
    plan: _Plan, previous: Pushed | None, fail: Failing | None, now: str
) -> bool:
    """True when sending this row would change nothing or break a rule.

    Forstok already holds the value; or the reading is older than the one
    Forstok last accepted (an older reading never overwrites a newer one);
    or the same value is held, or waiting out its backoff after a rejection.
    """
    if previous and previous.read_at > plan.read_at:
        log.info(
            "stale_reading_skipped", sku=plan.sku, warehouse=previous.forstok_warehouse
        )
        return True
    if fail is None:
        return (
            previous is not None
            and previous.settled
            and previous.quantity == plan.quantity
        )
    if fail.quantity != plan.quantity:
        return False
    return fail.held or fail.retry_at > now


def _opt_lock(row: Mapping[str, Any]) -> int | None:
    value = row.get("optLock")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _item(row: Mapping[str, Any]) -> Item | None:
    item_id, number = row.get("id"), row.get("no")
    if not isinstance(item_id, int) or not isinstance(number, str):
        log.error("item_unreadable", item=item_id, value=number)
        return None
    return Item(
        item_id,
        number,
        str(row.get("itemType") or "INVENTORY"),
        bool(row.get("suspended")),
    )


@dataclass(frozen=True)
class _Listing:
    rows: list[dict[str, Any]]
    moved_since: str | None = None
    """The oldest `lastUpdate` of a row that differed between the two passes."""


def _versions(rows: Iterable[Mapping[str, Any]]) -> dict[Any, set[tuple[Any, Any]]]:
    found: dict[Any, set[tuple[Any, Any]]] = defaultdict(set)
    for row in rows:
        found[row.get("id")].add((row.get("lastUpdate"), row.get("optLock")))
    return found


def _oldest_moved(
    first: list[dict[str, Any]], second: list[dict[str, Any]]
) -> str | None:
    """The oldest stamp, old or new, of a row the two passes saw differently."""
    before, after = _versions(first), _versions(second)
    stamps = [
        str(stamp)
        for doc_id in before.keys() | after.keys()
        if before.get(doc_id) != after.get(doc_id)
        for stamp, _ in before.get(doc_id, set()) | after.get(doc_id, set())
    ]
    parsed = []
    for stamp in stamps:
        try:
            parsed.append((parse_last_update(stamp), stamp))
        except BadTimestamp:
            continue  # an unparsable stamp holds the cursor on its own
    return min(parsed)[1] if parsed else None


def _held_back(
    current: str | None, proposed: str | None, moved: str | None
) -> str | None:
    """The cursor to save: `proposed`, but no later than a row that moved while
    the list was read (so the next lookback covers it), and never backward."""
    if proposed is None or moved is None:
        return proposed
    if parse_last_update(moved) >= parse_last_update(proposed):
        return proposed
    log.info("cursor_held_back", proposed=proposed, moved_since=moved)
    return advance(current, [moved])


def _item_versions(
    read: Iterable[tuple[Item, Mapping[str, Any]]],
) -> list[DocumentRecord]:
    """What the item poll remembers of each listed item, as `_poll_items` does."""
    versions = []
    for item, row in read:
        stamp = row.get("lastUpdate")
        try:
            parse_last_update(stamp)
        except BadTimestamp:
            continue
        pairs = frozenset({(item.id, ALL_WAREHOUSES)})
        versions.append(
            DocumentRecord(item.id, item.no, str(stamp), _opt_lock(row), pairs)
        )
    return versions


def _by_item(pairs: Iterable[QueuedPair]) -> dict[int, list[QueuedPair]]:
    by_item: dict[int, list[QueuedPair]] = defaultdict(list)
    for pair in pairs:
        by_item[pair.item_id].append(pair)
    return by_item


def _union_by_id(
    first: list[dict[str, Any]], second: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    by_id = {row.get("id"): row for row in first}
    for row in second:
        by_id[row.get("id")] = row
    return list(by_id.values())


def _date_at_or_after(value: str | None, first: date) -> bool:
    if value is None:
        return False
    try:
        day = datetime.strptime(value, DATE_FORMAT).date()  # noqa: DTZ007  a date, no time
    except ValueError:
        return False
    return day >= first
