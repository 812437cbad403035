"""Durable state in one SQLite file.

What must survive a crash lives here, and moves between tables only inside
one write transaction:

    list documents ──► document + pending_pair + cursor      (one transaction)
    read stock     ──► reading + push_queue, minus pending_pair   (one transaction)
    push accepted  ──► pushed + history, minus push_queue         (one transaction)

A cursor therefore never passes work that is not recorded (C20), and a pair
leaves a queue only once the next stage holds it. Queue rows carry a
sequence number: a row re-queued while its earlier copy was being worked on
keeps its place, because removal only takes rows up to the sequence read. A
re-queue always raises the row's number, even when another process (an
operator's command) numbers from its own counter.

Every write transaction starts with BEGIN IMMEDIATE, so it takes the write
lock up front instead of failing on a lock upgrade (C24), and runs shielded
from cancellation, so it commits or rolls back whole.

A state file that cannot be used (damaged, not a database, unreadable, or
in a place that is not a writable directory) is reported as StateUnusable,
naming `state_path` and what to do, never as a bare SQLite error. So is a
database of another program, told by the header stamp stocksync writes
(PRAGMA application_id), and one whose schema is newer than this code's.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from daemon.errors import StateUnusable
from daemon.kinds import Pair
from daemon.mapping import Item, Override, normalize_sku
from daemon.timefmt import iso_utc, parse_last_update, utc_now

SCHEMA_VERSION = 1
RUNS_KEPT = 50
"""Runs remembered per type (poll, full_sync)."""
APPLICATION_ID = 0x53544B53
"""Stamped in the SQLite header (PRAGMA application_id): "STKS"."""

Reasons = Mapping[Pair, str] | Iterable[Pair]
"""Pairs to queue, each with the reason it is queued, or all with one reason."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursor (
    kind TEXT PRIMARY KEY,
    last_update TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS document (
    kind TEXT NOT NULL,
    id INTEGER NOT NULL,
    number TEXT,
    last_update TEXT NOT NULL,
    sort_key TEXT NOT NULL,
    opt_lock INTEGER,
    trans_date TEXT,
    pairs TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS document_recent ON document (kind, sort_key);
CREATE TABLE IF NOT EXISTS item (
    id INTEGER PRIMARY KEY,
    no TEXT NOT NULL,
    no_norm TEXT NOT NULL,
    name TEXT,
    item_type TEXT NOT NULL,
    suspended INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS item_no_norm ON item (no_norm);
CREATE TABLE IF NOT EXISTS warehouse (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    suspended INTEGER NOT NULL,
    row_count INTEGER
);
CREATE TABLE IF NOT EXISTS forstok_sku (
    sku TEXT PRIMARY KEY,
    sku_norm TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS item_override (
    item_no TEXT PRIMARY KEY,
    forstok_sku TEXT,
    pack_size TEXT NOT NULL,
    excluded INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_pair (
    item_id INTEGER NOT NULL,
    warehouse_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (item_id, warehouse_id)
);
CREATE INDEX IF NOT EXISTS pending_pair_seq ON pending_pair (seq);
CREATE TABLE IF NOT EXISTS reading (
    item_id INTEGER NOT NULL,
    warehouse_id INTEGER NOT NULL,
    quantity TEXT NOT NULL,
    read_at TEXT NOT NULL,
    PRIMARY KEY (item_id, warehouse_id)
);
CREATE TABLE IF NOT EXISTS push_queue (
    item_id INTEGER NOT NULL,
    forstok_warehouse INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (item_id, forstok_warehouse)
);
CREATE INDEX IF NOT EXISTS push_queue_seq ON push_queue (seq);
CREATE TABLE IF NOT EXISTS pushed (
    sku TEXT NOT NULL,
    forstok_warehouse INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    read_at TEXT NOT NULL,
    pushed_at TEXT NOT NULL,
    PRIMARY KEY (sku, forstok_warehouse)
);
CREATE TABLE IF NOT EXISTS sending (
    sku TEXT NOT NULL,
    forstok_warehouse INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    read_at TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (sku, forstok_warehouse)
);
CREATE TABLE IF NOT EXISTS failing (
    sku TEXT NOT NULL,
    forstok_warehouse INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    retry_at TEXT NOT NULL,
    held INTEGER NOT NULL,
    PRIMARY KEY (sku, forstok_warehouse)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    sku TEXT NOT NULL,
    forstok_warehouse INTEGER NOT NULL,
    old INTEGER,
    new INTEGER NOT NULL,
    reason TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_sku ON history (sku, at);
CREATE TABLE IF NOT EXISTS forstok_unknown (
    sku TEXT NOT NULL,
    forstok_warehouse INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (sku, forstok_warehouse)
);
CREATE TABLE IF NOT EXISTS run (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT,
    counts TEXT,
    error TEXT
);
"""


@dataclass(frozen=True)
class DocumentRecord:
    id: int
    number: str | None
    last_update: str
    opt_lock: int | None
    pairs: frozenset[Pair]
    trans_date: str | None = None

    def same_version(self, last_update: str, opt_lock: int | None) -> bool:
        return self.last_update == last_update and self.opt_lock == opt_lock


@dataclass(frozen=True)
class QueuedPair:
    item_id: int
    warehouse_id: int
    seq: int
    reason: str


@dataclass(frozen=True)
class Reading:
    item_id: int
    warehouse_id: int
    quantity: Decimal
    read_at: str


@dataclass(frozen=True)
class QueuedTarget:
    item_id: int
    forstok_warehouse: int
    seq: int
    reason: str


@dataclass(frozen=True)
class Pushed:
    """What Forstok last accepted for a pair, as far as we know.

    `settled` is False while a request that may have changed it has no known
    outcome (the daemon died, or the answer was lost): Forstok then holds
    either `quantity` or the value sent, and `read_at` is the newer of the two.
    """

    sku: str
    forstok_warehouse: int
    quantity: int
    read_at: str
    settled: bool = True


@dataclass(frozen=True)
class Failing:
    sku: str
    forstok_warehouse: int
    quantity: int
    attempts: int
    reason: str
    retry_at: str
    held: bool


@dataclass(frozen=True)
class PushRecord:
    """One row's outcome, as the push stage records it."""

    target: QueuedTarget
    sku: str
    quantity: int
    read_at: str
    old: int | None
    reason: str
    outcome: str
    """`pushed`, `dry_run`, `rejected`, `held`, `unmapped`, `skipped`."""
    error: str | None = None
    attempts: int = 0
    retry_at: str | None = None


class State:
    """The daemon's SQLite file; one connection, one writer at a time."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = anyio.Lock()
        self._seq = 0

    @classmethod
    async def open(cls, path: Path) -> State:
        """Open the state file, creating it and its directory if need be.

        Raises StateUnusable when the file or its place cannot be used. On
        any failure the connection is closed again: its worker thread is no
        daemon thread, and left running it keeps the process from exiting.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            _raise_if_unusable(path, error)
            raise
        try:
            db.row_factory = aiosqlite.Row
            state = cls(db, path)
            await state._prepare()
        except BaseException as error:
            await _close_quietly(db)
            if isinstance(error, OSError | sqlite3.Error):
                _raise_if_unusable(path, error)
            raise
        return state

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._db.close()

    async def _prepare(self) -> None:
        # Before any write: even switching the journal mode would change a
        # file that belongs to another program.
        await self._check_ownership()
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA busy_timeout=10000")
        # FULL: a committed cursor survives power loss, not only a crash.
        await self._db.execute("PRAGMA synchronous=FULL")
        async with self.write() as db:
            await db.executescript_in_tx(_SCHEMA)
            await db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            await db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        self._seq = int(
            await self._scalar(
                "SELECT max(m) FROM (SELECT max(seq) m FROM pending_pair "
                "UNION ALL SELECT max(seq) FROM push_queue)"
            )
            or 0
        )

    async def _check_ownership(self) -> None:
        """Refuse a database of another program, or one written by a newer
        stocksync: adding our tables to the first, or reading the second with
        an older schema in mind, would damage work that is not ours to touch.
        Files made before the header was stamped hold only our tables."""
        stamp = await self._scalar("PRAGMA application_id")
        tables = {
            row[0]
            for row in await self._rows(
                "SELECT name FROM sqlite_master "
                "WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
            )
        }
        if stamp != APPLICATION_ID and (tables - _TABLES or stamp):
            raise _foreign(self.path, stamp, tables)

        if "meta" in tables:
            version = await self._scalar(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            )
            if version is not None and _newer_schema(str(version)):
                raise StateUnusable(
                    str(self.path),
                    f"was written by a newer stocksync (schema {version}; this "
                    f"one knows {SCHEMA_VERSION})",
                    "run the newer stocksync again, or point state_path at a "
                    "new file (a new state file starts with a full sync)",
                )

    # -- transactions -----------------------------------------------------

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_Tx]:
        """A write transaction: BEGIN IMMEDIATE, shielded, all or nothing."""
        with anyio.CancelScope(shield=True):
            async with self._lock:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield _Tx(self._db)
                except BaseException:
                    await self._db.execute("ROLLBACK")
                    raise
                await self._db.execute("COMMIT")

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self._lock:
            cursor = await self._db.execute(sql, args)
            rows = await cursor.fetchall()
            await cursor.close()
            return list(rows)

    async def _scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = await self._rows(sql, args)
        return rows[0][0] if rows else None

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- meta -------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        value = await self._scalar("SELECT value FROM meta WHERE key = ?", (key,))
        return None if value is None else str(value)

    async def set_meta(self, key: str, value: str) -> None:
        async with self.write() as db:
            await db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- cursors and documents ---------------------------------------------

    async def cursors(self) -> dict[str, str]:
        rows = await self._rows("SELECT kind, last_update FROM cursor")
        return {row["kind"]: row["last_update"] for row in rows}

    async def cursor_rows(self) -> list[dict[str, str]]:
        rows = await self._rows("SELECT kind, last_update, updated_at FROM cursor")
        return [dict(row) for row in rows]

    async def documents(
        self, kind: str, ids: Iterable[int] | None = None, since: str | None = None
    ) -> dict[int, DocumentRecord]:
        """Known documents of a kind: by id, or at/after a `lastUpdate`."""
        if ids is not None:
            found: dict[int, DocumentRecord] = {}
            for chunk in _chunks(sorted(set(ids)), 500):
                marks = ",".join("?" * len(chunk))
                rows = await self._rows(
                    f"SELECT * FROM document WHERE kind = ? AND id IN ({marks})",  # noqa: S608  placeholders only
                    [kind, *chunk],
                )
                found.update({row["id"]: _document(row) for row in rows})
            return found
        sql = "SELECT * FROM document WHERE kind = ?"
        args: list[Any] = [kind]
        if since is not None:
            sql += " AND sort_key >= ?"
            args.append(_sort_key(since))
        return {row["id"]: _document(row) for row in await self._rows(sql, args)}

    async def prune_documents(
        self, before: str, windows: Mapping[str, str] | None = None
    ) -> int:
        """Forget documents last changed before `before` (a lastUpdate value),
        except those a kind's poll still lists: `windows` maps a kind to the
        start of its poll window. Forgotten there, an unchanged document would
        pass for a new one and be read again at every poll.

        A remembered document lets an edit refresh the pairs its old version
        touched; an edit after this horizon is left to the full sync.
        """
        horizon = _sort_key(before)
        windows = {k: _sort_key(v) for k, v in (windows or {}).items()}
        async with self.write() as db:
            marks = ",".join("?" * len(windows))
            cursor = await db.execute(
                f"DELETE FROM document WHERE sort_key < ? AND kind NOT IN ({marks})",  # noqa: S608  placeholders only
                (horizon, *windows),
            )
            removed = cursor.rowcount
            for kind, start in windows.items():
                cursor = await db.execute(
                    "DELETE FROM document WHERE kind = ? AND sort_key < ?",
                    (kind, min(horizon, start)),
                )
                removed += cursor.rowcount
            return removed

    async def record_documents(
        self,
        kind: str,
        changed: Sequence[DocumentRecord],
        deleted: Sequence[int],
        pairs: Reasons,
        cursor: str | None,
        reason: str = "",
    ) -> None:
        """Remember what a poll found and queue its pairs, with the cursor."""
        now = iso_utc(utc_now())
        async with self.write() as db:
            await self._store_documents(db, kind, changed)
            await db.executemany(
                "DELETE FROM document WHERE kind = ? AND id = ?",
                [(kind, doc_id) for doc_id in deleted],
            )
            await self._queue_pairs(db, pairs, reason)
            if cursor is not None:
                await db.execute(
                    "INSERT INTO cursor VALUES (?, ?, ?) ON CONFLICT (kind) DO UPDATE "
                    "SET last_update = excluded.last_update, updated_at = ?",
                    (kind, cursor, now, now),
                )

    async def _store_documents(
        self, db: _Tx, kind: str, documents: Sequence[DocumentRecord]
    ) -> None:
        await db.executemany(
            "INSERT OR REPLACE INTO document VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    kind,
                    d.id,
                    d.number,
                    d.last_update,
                    _sort_key_or_raw(d.last_update),
                    d.opt_lock,
                    d.trans_date,
                    json.dumps(sorted(d.pairs)),
                )
                for d in documents
            ],
        )

    async def _queue_pairs(self, db: _Tx, pairs: Reasons, reason: str) -> None:
        reasons = pairs if isinstance(pairs, Mapping) else dict.fromkeys(pairs, reason)
        await db.executemany(
            "INSERT INTO pending_pair VALUES (?, ?, ?, ?) "
            "ON CONFLICT (item_id, warehouse_id) DO UPDATE SET "
            "seq = max(excluded.seq, pending_pair.seq + 1), "
            "reason = excluded.reason",
            [
                (item, wh, self._next_seq(), reasons[(item, wh)])
                for item, wh in sorted(reasons)
            ],
        )

    async def queue_pairs(self, pairs: Reasons, reason: str = "") -> None:
        async with self.write() as db:
            await self._queue_pairs(db, pairs, reason)

    # -- items, warehouses, mapping inputs -----------------------------------

    async def record_items(
        self,
        items: Sequence[tuple[Item, str | None]],
        pairs: Reasons,
        cursor: str | None,
        reason: str = "",
        versions: Sequence[DocumentRecord] = (),
    ) -> None:
        """Upsert items (with names) and queue their pairs, with the cursor.

        `versions` remembers each item's `lastUpdate`, so that re-listing an
        unchanged item costs nothing.
        """
        now = iso_utc(utc_now())
        async with self.write() as db:
            await self._store_documents(db, "opening_balance", versions)
            await db.executemany(
                "INSERT OR REPLACE INTO item VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        i.id,
                        i.no,
                        normalize_sku(i.no),
                        name,
                        i.item_type,
                        int(i.suspended),
                    )
                    for i, name in items
                ],
            )
            await self._queue_pairs(db, pairs, reason)
            if cursor is not None:
                await db.execute(
                    "INSERT INTO cursor VALUES ('opening_balance', ?, ?) "
                    "ON CONFLICT (kind) DO UPDATE SET "
                    "last_update = excluded.last_update, "
                    "updated_at = excluded.updated_at",
                    (cursor, now),
                )

    async def forget_items(self, item_ids: Sequence[int]) -> None:
        """Drop items Accurate no longer has, with their queued work: kept,
        a deleted item would collide forever with a new one of its number."""
        async with self.write() as db:
            for chunk in _chunks(sorted(set(item_ids)), 500):
                marks = ",".join("?" * len(chunk))
                for table, column in _ITEM_ROWS:
                    where = f"{column} IN ({marks})"
                    if table == "document":
                        where += " AND kind = 'opening_balance'"
                    await db.execute(f"DELETE FROM {table} WHERE {where}", chunk)  # noqa: S608  fixed names, placeholders

    async def pushed_skus(self) -> list[str]:
        """Every SKU ever pushed, once (not per warehouse: a catalogue's worth
        of rows, not three)."""
        rows = await self._rows("SELECT DISTINCT sku FROM pushed")
        return [row[0] for row in rows]

    async def pushed_of(self, skus: Iterable[str]) -> dict[tuple[str, int], int]:
        """The last quantity pushed to each warehouse for these SKUs."""
        found: dict[tuple[str, int], int] = {}
        for chunk in _chunks(sorted(set(skus)), 500):
            marks = ",".join("?" * len(chunk))
            where = f"WHERE sku IN ({marks})"
            sql = f"SELECT sku, forstok_warehouse, quantity FROM pushed {where}"  # noqa: S608  placeholders only
            rows = await self._rows(sql, chunk)
            found.update({(r[0], r[1]): r[2] for r in rows})
        return found

    async def items_numbered(self, numbers: Iterable[str]) -> list[Item]:
        """The stored items with these exact numbers."""
        found: list[Item] = []
        for chunk in _chunks(sorted(set(numbers)), 500):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id, no, item_type, suspended FROM item WHERE no IN ({marks})"  # noqa: S608  placeholders only
            rows = await self._rows(sql, chunk)
            found += [Item(r[0], r[1], r[2], bool(r[3])) for r in rows]
        return found

    async def item_numbers(self) -> list[str]:
        return [row[0] for row in await self._rows("SELECT no FROM item")]

    async def item_ids(self) -> set[int]:
        return {row[0] for row in await self._rows("SELECT id FROM item")}

    async def newest_reading_stamp(self) -> str | None:
        """The latest `read_at` stored, in readings or in what was pushed."""
        value = await self._scalar(
            "SELECT max(m) FROM (SELECT max(read_at) m FROM reading "
            "UNION ALL SELECT max(read_at) FROM pushed "
            "UNION ALL SELECT max(read_at) FROM sending)"
        )
        return str(value) if value is not None else None

    async def items(self) -> list[Item]:
        rows = await self._rows("SELECT id, no, item_type, suspended FROM item")
        return [
            Item(row["id"], row["no"], row["item_type"], bool(row["suspended"]))
            for row in rows
        ]

    async def item_names(self, ids: Iterable[int]) -> dict[int, str]:
        wanted = list(set(ids))
        names: dict[int, str] = {}
        for chunk in _chunks(wanted, 500):
            marks = ",".join("?" * len(chunk))
            rows = await self._rows(
                f"SELECT id, no FROM item WHERE id IN ({marks})",  # noqa: S608  placeholders only
                chunk,
            )
            names.update({row["id"]: row["no"] for row in rows})
        return names

    async def set_warehouses(self, warehouses: Iterable[tuple[int, str, bool]]) -> None:
        async with self.write() as db:
            await db.executemany(
                "INSERT INTO warehouse (id, name, suspended) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                "suspended = excluded.suspended",
                [(wid, name, int(suspended)) for wid, name, suspended in warehouses],
            )

    async def warehouses(self) -> list[dict[str, Any]]:
        """Accurate's warehouses as last read: id, name, suspended."""
        rows = await self._rows("SELECT id, name, suspended FROM warehouse")
        return [
            {"id": r["id"], "name": r["name"], "suspended": bool(r["suspended"])}
            for r in rows
        ]

    async def set_warehouse_rows(self, warehouse_id: int, row_count: int) -> None:
        async with self.write() as db:
            await db.execute(
                "UPDATE warehouse SET row_count = ? WHERE id = ?",
                (row_count, warehouse_id),
            )

    async def warehouse_rows(self) -> dict[int, int]:
        rows = await self._rows(
            "SELECT id, row_count FROM warehouse WHERE row_count IS NOT NULL"
        )
        return {row["id"]: row["row_count"] for row in rows}

    async def overrides(self) -> dict[str, Override]:
        rows = await self._rows("SELECT * FROM item_override")
        return {
            row["item_no"]: Override(
                row["item_no"],
                row["forstok_sku"],
                Decimal(row["pack_size"]),
                bool(row["excluded"]),
            )
            for row in rows
        }

    async def replace_overrides(self, overrides: Iterable[Override]) -> None:
        async with self.write() as db:
            await _bump_mapping_version(db)
            await db.execute("DELETE FROM item_override")
            await db.executemany(
                "INSERT INTO item_override VALUES (?, ?, ?, ?)",
                [
                    (o.item_no, o.forstok_sku, str(o.pack_size), int(o.excluded))
                    for o in overrides
                ],
            )

    async def forstok_skus(self) -> list[str] | None:
        """The imported Forstok export, or None if none was imported."""
        if await self.get_meta("forstok_export") is None:
            return None
        rows = await self._rows("SELECT sku FROM forstok_sku")
        return [row["sku"] for row in rows]

    async def replace_forstok_skus(self, skus: Iterable[str], source: str) -> None:
        async with self.write() as db:
            await _bump_mapping_version(db)
            await db.execute("DELETE FROM forstok_sku")
            await db.executemany(
                "INSERT OR IGNORE INTO forstok_sku VALUES (?, ?)",
                [(sku, normalize_sku(sku)) for sku in skus],
            )
            await db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('forstok_export', ?)", (source,)
            )

    async def clear_forstok_skus(self) -> None:
        """Forget the imported export: each item's number is its SKU again.

        One transaction, so that a poll never sees the export half gone."""
        async with self.write() as db:
            await _bump_mapping_version(db)
            await db.execute("DELETE FROM forstok_sku")
            await db.execute("DELETE FROM meta WHERE key = 'forstok_export'")

    # -- refresh: pending pairs to readings ------------------------------------

    async def pending_pairs(self, limit: int | None = None) -> list[QueuedPair]:
        sql = "SELECT * FROM pending_pair ORDER BY seq"
        args: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            args = (limit,)
        rows = await self._rows(sql, args)
        return [
            QueuedPair(row["item_id"], row["warehouse_id"], row["seq"], row["reason"])
            for row in rows
        ]

    async def readings(self, item_ids: Iterable[int]) -> dict[Pair, Reading]:
        found: dict[Pair, Reading] = {}
        for chunk in _chunks(sorted(set(item_ids)), 500):
            marks = ",".join("?" * len(chunk))
            rows = await self._rows(
                f"SELECT * FROM reading WHERE item_id IN ({marks})",  # noqa: S608  placeholders only
                chunk,
            )
            for row in rows:
                reading = _reading(row)
                found[(reading.item_id, reading.warehouse_id)] = reading
        return found

    async def readings_in(self, warehouse_id: int) -> dict[int, Reading]:
        rows = await self._rows(
            "SELECT * FROM reading WHERE warehouse_id = ?", (warehouse_id,)
        )
        return {row["item_id"]: _reading(row) for row in rows}

    async def record_readings(
        self,
        readings: Sequence[Reading],
        done: Sequence[QueuedPair],
        targets: Iterable[tuple[int, int]],
        reason: str,
        requeue: Reasons = (),
        target_reasons: Mapping[tuple[int, int], str] | None = None,
    ) -> None:
        """Store stock read from Accurate and queue the Forstok targets it feeds.

        A reading replaces an older one only; a pending pair is removed only
        if it was not queued again after it was taken (its seq is unchanged).
        `target_reasons` gives a target its own reason (the document that
        touched it) in place of `reason`, for its push history.
        """
        why = target_reasons or {}
        async with self.write() as db:
            await db.executemany(
                "INSERT INTO reading VALUES (?, ?, ?, ?) "
                "ON CONFLICT (item_id, warehouse_id) DO UPDATE SET "
                "quantity = excluded.quantity, read_at = excluded.read_at "
                "WHERE excluded.read_at >= reading.read_at",
                [
                    (r.item_id, r.warehouse_id, str(r.quantity), r.read_at)
                    for r in readings
                ],
            )
            await db.executemany(
                "DELETE FROM pending_pair WHERE item_id = ? AND warehouse_id = ? "
                "AND seq <= ?",
                [(p.item_id, p.warehouse_id, p.seq) for p in done],
            )
            await self._queue_pairs(db, requeue, reason)
            await db.executemany(
                "INSERT INTO push_queue VALUES (?, ?, ?, ?) "
                "ON CONFLICT (item_id, forstok_warehouse) DO UPDATE SET "
                "seq = max(excluded.seq, push_queue.seq + 1), "
                "reason = excluded.reason",
                [
                    (item, fwh, self._next_seq(), why.get((item, fwh), reason))
                    for item, fwh in targets
                ],
            )

    # -- push: queue to Forstok ---------------------------------------------

    async def queued_targets(self, limit: int) -> list[QueuedTarget]:
        rows = await self._rows(
            "SELECT * FROM push_queue ORDER BY seq LIMIT ?", (limit,)
        )
        return [
            QueuedTarget(
                row["item_id"], row["forstok_warehouse"], row["seq"], row["reason"]
            )
            for row in rows
        ]

    async def queue_targets(
        self, targets: Iterable[tuple[int, int]], reason: str
    ) -> None:
        async with self.write() as db:
            await db.executemany(
                "INSERT INTO push_queue VALUES (?, ?, ?, ?) "
                "ON CONFLICT (item_id, forstok_warehouse) DO UPDATE SET "
                "seq = max(excluded.seq, push_queue.seq + 1), "
                "reason = excluded.reason",
                [(item, fwh, self._next_seq(), reason) for item, fwh in targets],
            )

    async def count(self, table: str) -> int:
        if table not in {"pending_pair", "push_queue", "pushed", "document", "item"}:
            raise ValueError(f"unknown table {table}")
        return int(await self._scalar(f"SELECT count(*) FROM {table}"))  # noqa: S608  table name checked above

    async def pushed(
        self, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], Pushed]:
        found: dict[tuple[str, int], Pushed] = {}
        for chunk in _chunks(sorted(set(keys)), 400):
            clause = " OR ".join("(sku = ? AND forstok_warehouse = ?)" for _ in chunk)
            args = [v for key in chunk for v in key]
            for table in ("pushed", "sending"):
                rows = await self._rows(f"SELECT * FROM {table} WHERE {clause}", args)  # noqa: S608  fixed table names, placeholders
                for row in rows:
                    key = (row["sku"], row["forstok_warehouse"])
                    found[key] = _pushed(found.get(key), row, table == "pushed")
        return found

    async def mark_sending(self, rows: Sequence[tuple[str, int, int, str]]) -> None:
        """Note (SKU, warehouse, quantity, read_at) rows about to be sent.

        Until their outcome is recorded, what Forstok holds for them is not
        known: a crash or a lost answer after Forstok applied them must not
        let a later push be skipped as "already there" (C20).
        """
        now = iso_utc(utc_now())
        async with self.write() as db:
            await db.executemany(
                "INSERT INTO sending VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (sku, forstok_warehouse) DO UPDATE SET "
                "quantity = excluded.quantity, at = excluded.at, "
                "read_at = max(sending.read_at, excluded.read_at)",
                [(*row, now) for row in rows],
            )

    async def unsettle_pushed(self) -> int:
        """Treat every value Forstok last accepted as unconfirmed, as if its
        request had gone unanswered, so that the next push of each pair is
        sent even when the value is the same (`full-sync --repush`: someone
        may have changed it by hand in Forstok). Returns the pairs marked."""
        now = iso_utc(utc_now())
        async with self.write() as db:
            cursor = await db.execute(
                "INSERT OR IGNORE INTO sending "
                "SELECT sku, forstok_warehouse, quantity, read_at, ? FROM pushed",
                (now,),
            )
            return cursor.rowcount

    async def failing(
        self, keys: Iterable[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], Failing]:
        rows = await self._rows("SELECT * FROM failing")
        wanted = None if keys is None else set(keys)
        result = {}
        for row in rows:
            key = (row["sku"], row["forstok_warehouse"])
            if wanted is None or key in wanted:
                result[key] = Failing(
                    row["sku"],
                    row["forstok_warehouse"],
                    row["quantity"],
                    row["attempts"],
                    row["reason"],
                    row["retry_at"],
                    bool(row["held"]),
                )
        return result

    async def record_pushes(self, records: Sequence[PushRecord]) -> None:
        """Record the outcome of one push request, all rows in one transaction."""
        now = iso_utc(utc_now())
        # The two common outcomes go in one statement each (a full sync
        # records tens of thousands); the rare ones row by row. A request's
        # rows name distinct targets, so the order between them is free.
        common = [r for r in records if r.outcome in {"pushed", "skipped"}]
        async with self.write() as db:
            for record in records:
                if record.outcome not in {"pushed", "skipped"}:
                    await self._record_push(db, record, now)
            await self._record_common_pushes(db, common, now)

    async def _record_common_pushes(
        self, db: _Tx, records: Sequence[PushRecord], now: str
    ) -> None:
        """What `_record_push` does for `pushed` and `skipped`, in bulk."""
        pushed = [r for r in records if r.outcome == "pushed"]
        await db.executemany(
            "INSERT OR REPLACE INTO pushed VALUES (?, ?, ?, ?, ?)",
            [
                (r.sku, r.target.forstok_warehouse, r.quantity, r.read_at, now)
                for r in pushed
            ],
        )
        await db.executemany(
            "DELETE FROM failing WHERE sku = ? AND forstok_warehouse = ?",
            [(r.sku, r.target.forstok_warehouse) for r in pushed],
        )
        await db.executemany(
            "DELETE FROM sending WHERE sku = ? AND forstok_warehouse = ?",
            [(r.sku, r.target.forstok_warehouse) for r in pushed],
        )
        await db.executemany(
            "INSERT INTO history (at, sku, forstok_warehouse, old, new, reason, "
            "outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [_history_row(r, now) for r in pushed],
        )
        await db.executemany(
            "DELETE FROM push_queue WHERE item_id = ? AND forstok_warehouse = ? "
            "AND seq <= ?",
            [
                (r.target.item_id, r.target.forstok_warehouse, r.target.seq)
                for r in records
            ],
        )

    async def _record_push(self, db: _Tx, r: PushRecord, now: str) -> None:
        key = (r.sku, r.target.forstok_warehouse)
        if r.outcome in {"pushed", "rejected", "held", "unmapped"}:
            # Forstok answered for this row: what it holds is known again.
            await db.execute(
                "DELETE FROM sending WHERE sku = ? AND forstok_warehouse = ?", key
            )
        if r.outcome == "pushed":
            await db.execute(
                "INSERT OR REPLACE INTO pushed VALUES (?, ?, ?, ?, ?)",
                (*key, r.quantity, r.read_at, now),
            )
            await db.execute(
                "DELETE FROM failing WHERE sku = ? AND forstok_warehouse = ?", key
            )
        elif r.outcome == "unmapped":
            # Forstok does not know this SKU here: stop pushing it until an
            # operator runs `stocksync retry` (C14: a renamed SKU).
            await db.execute(
                "INSERT OR REPLACE INTO forstok_unknown VALUES (?, ?, ?, ?)",
                (*key, r.error or "not found", now),
            )
            await db.execute(
                "DELETE FROM failing WHERE sku = ? AND forstok_warehouse = ?", key
            )
        elif r.outcome in {"rejected", "held"}:
            await db.execute(
                "INSERT OR REPLACE INTO failing VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    *key,
                    r.quantity,
                    r.attempts,
                    r.error or "",
                    r.retry_at or now,
                    int(r.outcome == "held"),
                ),
            )
        if r.outcome != "skipped":
            await db.execute(
                "INSERT INTO history (at, sku, forstok_warehouse, old, new, reason, "
                "outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (now, *key, r.old, r.quantity, r.reason, _outcome_text(r)),
            )
        await db.execute(
            "DELETE FROM push_queue WHERE item_id = ? AND forstok_warehouse = ? "
            "AND seq <= ?",
            (r.target.item_id, r.target.forstok_warehouse, r.target.seq),
        )

    async def release_held(self, sku: str | None = None) -> int:
        """Let held rows be tried again; returns how many were released."""
        async with self.write() as db:
            sql = "DELETE FROM failing"
            args: tuple[Any, ...] = ()
            if sku is not None:
                sql += " WHERE sku = ?"
                args = (sku,)
            cursor = await db.execute(sql, args)
            return cursor.rowcount

    async def unknown_targets(self) -> dict[tuple[str, int], dict[str, Any]]:
        """(SKU, Forstok warehouse) pairs Forstok answered "not found" for."""
        rows = await self._rows("SELECT * FROM forstok_unknown")
        return {
            (r["sku"], r["forstok_warehouse"]): {"reason": r["reason"], "at": r["at"]}
            for r in rows
        }

    async def retry(
        self, keys: Iterable[tuple[str, int]], pairs: Reasons, reason: str = ""
    ) -> int:
        """Forget the failures and "not found" marks of `keys` and queue fresh
        reads of `pairs`, in one transaction; returns the rows released."""
        keys = list(keys)
        released = 0
        async with self.write() as db:
            for table in ("failing", "forstok_unknown"):
                for key in keys:
                    cursor = await db.execute(
                        f"DELETE FROM {table} WHERE sku = ? AND forstok_warehouse = ?",  # noqa: S608  fixed table names
                        key,
                    )
                    released += cursor.rowcount
            await self._queue_pairs(db, pairs, reason)
        return released

    # -- history and runs ---------------------------------------------------

    async def history(self, sku: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._rows(
            "SELECT * FROM history WHERE sku = ? ORDER BY id DESC LIMIT ?",
            (sku, limit),
        )
        return [dict(row) for row in rows]

    async def prune_history(self, before: str) -> int:
        async with self.write() as db:
            cursor = await db.execute("DELETE FROM history WHERE at < ?", (before,))
            return cursor.rowcount

    async def start_run(self, run_id: str, run_type: str) -> None:
        async with self.write() as db:
            await db.execute(
                "INSERT INTO run (id, type, started_at) VALUES (?, ?, ?)",
                (run_id, run_type, iso_utc(utc_now())),
            )

    async def finish_run(
        self, run_id: str, outcome: str, counts: dict[str, Any], error: str | None
    ) -> None:
        run_type = await self._scalar("SELECT type FROM run WHERE id = ?", (run_id,))
        async with self.write() as db:
            await db.execute(
                "UPDATE run SET finished_at = ?, outcome = ?, counts = ?, error = ? "
                "WHERE id = ?",
                (iso_utc(utc_now()), outcome, json.dumps(counts), error, run_id),
            )
            # Runs of every type are kept to a bound, or years of nightly
            # full syncs would slow `status`, which reads them all.
            await db.execute(
                "DELETE FROM run WHERE type = ? AND id NOT IN (SELECT id FROM run "
                "WHERE type = ? ORDER BY rowid DESC LIMIT ?)",
                (run_type, run_type, RUNS_KEPT),
            )

    async def newest_run(self, run_type: str) -> dict[str, Any] | None:
        """The run of this type started last, finished or not. A process
        killed mid-run (SIGKILL, the OOM killer, a watchdog) leaves its run
        without `finished_at` or `outcome`. Runs are ordered as they were
        recorded (rowid), not by their clock times, which a clock set back
        would reorder."""
        rows = await self._rows(
            "SELECT * FROM run WHERE type = ? ORDER BY rowid DESC LIMIT 1",
            (run_type,),
        )
        return dict(rows[0]) if rows else None

    async def last_runs(self) -> dict[str, dict[str, Any]]:
        rows = await self._rows(
            "SELECT * FROM run WHERE finished_at IS NOT NULL ORDER BY rowid"
        )
        last: dict[str, dict[str, Any]] = {}
        for row in rows:
            entry = dict(row)
            entry["counts"] = json.loads(entry["counts"] or "{}")
            last[row["type"]] = entry
        return last


class _Tx:
    """The statements a write transaction may run."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> aiosqlite.Cursor:
        return await self._db.execute(sql, args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            await self._db.executemany(sql, rows)

    async def executescript_in_tx(self, script: str) -> None:
        # executescript would COMMIT first; run the statements one by one.
        for statement in script.split(";"):
            if statement.strip():
                await self._db.execute(statement)


def _sort_key(last_update: str) -> str:
    return parse_last_update(last_update).strftime("%Y-%m-%d %H:%M:%S")


def _sort_key_or_raw(last_update: str) -> str:
    try:
        return _sort_key(last_update)
    except ValueError:
        return ""


def _document(row: aiosqlite.Row) -> DocumentRecord:
    pairs = frozenset((int(a), int(b)) for a, b in json.loads(row["pairs"]))
    return DocumentRecord(
        row["id"],
        row["number"],
        row["last_update"],
        row["opt_lock"],
        pairs,
        row["trans_date"],
    )


def _reading(row: aiosqlite.Row) -> Reading:
    return Reading(
        row["item_id"], row["warehouse_id"], Decimal(row["quantity"]), row["read_at"]
    )


async def _bump_mapping_version(db: _Tx) -> None:
    """Tell a running daemon that the mapping inputs changed (it reloads)."""
    await db.execute(
        "INSERT INTO meta VALUES ('mapping_version', '1') ON CONFLICT (key) "
        "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
    )


def _history_row(r: PushRecord, now: str) -> tuple[Any, ...]:
    key = (r.sku, r.target.forstok_warehouse)
    return (now, *key, r.old, r.quantity, r.reason, _outcome_text(r))


def _pushed(known: Pushed | None, row: aiosqlite.Row, accepted: bool) -> Pushed:
    """Fold a `pushed` row, then a `sending` row, into what Forstok may hold."""
    if accepted:
        return Pushed(
            row["sku"], row["forstok_warehouse"], row["quantity"], row["read_at"]
        )
    base = known or Pushed(row["sku"], row["forstok_warehouse"], row["quantity"], "")
    read_at = max(base.read_at, row["read_at"])
    return Pushed(base.sku, base.forstok_warehouse, base.quantity, read_at, False)


def _outcome_text(record: PushRecord) -> str:
    if record.error:
        return f"{record.outcome}: {record.error}"
    return record.outcome


def _chunks(values: Sequence[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


# -- a state file that cannot be used -------------------------------------------

_ITEM_ROWS = (
    ("item", "id"),
    ("document", "id"),
    ("pending_pair", "item_id"),
    ("push_queue", "item_id"),
    ("reading", "item_id"),
)
"""Where an item's rows are, by table and column."""

_TABLES = set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))


def _foreign(path: Path, stamp: int, tables: set[str]) -> StateUnusable:
    others = sorted(tables - _TABLES)
    shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
    what = f"tables {shown}" if others else f"application_id {stamp}"
    return StateUnusable(
        str(path),
        f"is a SQLite database of another program ({what})",
        "point state_path at a new file; stocksync creates it and starts "
        "with a full sync",
    )


def _newer_schema(version: str) -> bool:
    try:
        return int(version) > SCHEMA_VERSION
    except ValueError:
        return True  # not a number this stocksync ever wrote


_DAMAGED = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)
_NO_ACCESS = (
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_PERM,
    sqlite3.SQLITE_AUTH,
)
_PLACE_ACTION = (
    "point state_path at a file in a directory the daemon may write "
    "(under systemd: ${STATE_DIRECTORY}/state.sqlite3)"
)


def check_state_path(path: Path) -> None:
    """Raise StateUnusable unless `path` can serve as the state file.

    It creates nothing, so read-only commands may call it first: a wrong path
    or a damaged file then stops every command with one clear line (exit 78)
    before any work, instead of a crash once the daemon is up. What it cannot
    foresee, `State.open` still reports the same way.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        _check_directory(path)
        return
    except OSError as error:
        _raise_if_unusable(path, error)
        raise
    if stat.S_ISDIR(info.st_mode):
        raise StateUnusable(
            str(path),
            "is a directory",
            f"name a file in it, such as {path / 'state.sqlite3'}",
        )
    _check_directory(path)
    if not os.access(path, os.R_OK | os.W_OK):
        raise _no_access(path, "this user may not read and write it")
    _check_database(path)


def _check_directory(path: Path) -> None:
    """The nearest existing directory on the way must be one we may write:
    SQLite keeps its -wal and -shm files beside the state file."""
    base = path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise StateUnusable(str(path), f"{base} is not a directory", _PLACE_ACTION)
    if not os.access(base, os.W_OK | os.X_OK):
        raise _no_access(path, f"this user may not write the directory {base}")


def _check_database(path: Path) -> None:
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as error:
        _raise_if_unusable(path, error)
        # Anything else (a lock held during crash recovery) is transient:
        # `State.open` meets it again and waits or reports it.


def _raise_if_unusable(path: Path, error: OSError | sqlite3.Error) -> None:
    """Raise StateUnusable for an error that says the file cannot be used.
    Others (a busy lock, a full disk) the caller re-raises as they are: they
    may pass, and a restart may then succeed."""
    if isinstance(error, OSError):
        found = _from_os(path, error)
    else:
        found = _from_sqlite(path, error)
    if found is not None:
        raise found from error


def _from_sqlite(path: Path, error: sqlite3.Error) -> StateUnusable | None:
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return None
    primary = code & 0xFF  # extended codes carry the primary in the low byte
    if primary in _DAMAGED:
        what = "is not a SQLite database" if primary == _DAMAGED[0] else "is damaged"
        return StateUnusable(
            str(path),
            f"{what} ({error})",
            f"restore it from a backup, or move it aside together with any "
            f"{path.name}-wal and {path.name}-shm beside it; a new state file "
            "starts with a full sync",
        )
    if primary in _NO_ACCESS:
        return _no_access(path, f"cannot be opened for writing ({error})")
    if primary == sqlite3.SQLITE_IOERR:
        return StateUnusable(
            str(path),
            f"cannot be read or written ({error})",
            "check the disk (dmesg) and the file's permissions, then restart",
        )
    return None


def _from_os(path: Path, error: OSError) -> StateUnusable | None:
    # EEXIST: mkdir met a file where a directory of the path should be.
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = _first_non_directory(path)
        return StateUnusable(str(path), f"{blocker} is not a directory", _PLACE_ACTION)
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return _no_access(path, f"cannot be created or written ({error.strerror})")
    if error.errno in (errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG):
        return StateUnusable(
            str(path), f"cannot be used ({error.strerror})", _PLACE_ACTION
        )
    return None  # a full disk and the like: they may pass


def _first_non_directory(path: Path) -> Path:
    for ancestor in reversed(path.parents):
        if ancestor.exists() and not ancestor.is_dir():
            return ancestor
    return path.parent


def _no_access(path: Path, problem: str) -> StateUnusable:
    return StateUnusable(
        str(path),
        problem,
        f"give the user stocksync runs as (uid {os.getuid()}) read and write "
        "access to the file and its directory, or " + _PLACE_ACTION,
    )


async def _close_quietly(db: aiosqlite.Connection) -> None:
    """Close after a failed open; the error that made us close is the news."""
    with anyio.CancelScope(shield=True), contextlib.suppress(sqlite3.Error):
        await db.close()
