"""What `stocksync status`, `mapping` and `history` show: plain data, then text.

Each report is built as a dictionary (printed as JSON with `--json`, for
scripts) and rendered from that same dictionary as tables for a person, so
the two never disagree. Reports only read the state file; the lock is asked
through the kernel (`daemon.lock.read_holder`), never the file's contents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from daemon.config import Settings
from daemon.kinds import KINDS, ChangeFeed
from daemon.lock import Holder, read_holder
from daemon.mapping import (
    MappingResult,
    resolve_mapping,
    skus_matching,
    unused_overrides,
)
from daemon.state import State
from daemon.timefmt import accurate_now, parse_last_update, utc_now

# -- status ---------------------------------------------------------------------


async def status_report(settings: Settings) -> dict[str, Any]:
    holder = read_holder(settings.state_path)
    report: dict[str, Any] = {
        "running": holder is not None,
        "daemon": _holder(holder),
        "state_path": str(settings.state_path),
        "dry_run": settings.sync.dry_run,
        "next_full_sync": _next_full_sync(settings),
    }
    if not settings.state_path.exists():
        # Opening would create the file; a status must not change anything.
        report["state_exists"] = False
        return report

    state = await State.open(settings.state_path)
    try:
        report.update(await _status_from_state(state, settings))
    finally:
        await state.close()
    return report


def _holder(holder: Holder | None) -> dict[str, Any] | None:
    if holder is None:
        return None
    return {
        "pid": holder.pid,
        "host": holder.host,
        "command": holder.command,
        "started": holder.started,
    }


async def _status_from_state(state: State, settings: Settings) -> dict[str, Any]:
    runs = await state.last_runs()
    cursors = {row["kind"]: row for row in await state.cursor_rows()}
    failing = await state.failing()
    unknown = await state.unknown_targets()
    return {
        "state_exists": True,
        "last_poll": _run(runs.get("poll")),
        "last_full_sync": _run(runs.get("full_sync")),
        "cursors": [_cursor(kind.name, kind.feed, cursors, settings) for kind in KINDS],
        "pairs_waiting": await state.count("pending_pair"),
        "pushes_waiting": await state.count("push_queue"),
        "pushes_held": sum(1 for f in failing.values() if f.held),
        "pushes_retrying": sum(1 for f in failing.values() if not f.held),
        "pushes_failing": [
            {
                "sku": f.sku,
                "warehouse": f.forstok_warehouse,
                "quantity": f.quantity,
                "attempts": f.attempts,
                "held": f.held,
                "retry_at": None if f.held else f.retry_at,
                "reason": f.reason,
            }
            for f in sorted(
                failing.values(), key=lambda f: (f.sku, f.forstok_warehouse)
            )
        ],
        "not_found_in_forstok": [
            {"sku": sku, "warehouse": wh, **mark}
            for (sku, wh), mark in sorted(unknown.items())
        ],
    }


def _run(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "duration_s": _seconds_between(row["started_at"], row["finished_at"]),
        "outcome": row["outcome"],
        "counts": row["counts"],
        "error": row["error"],
    }


def _seconds_between(start: str, end: str | None) -> float | None:
    if end is None:
        return None
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return round(delta.total_seconds(), 3)


def _cursor(
    kind: str,
    feed: ChangeFeed,
    cursors: Mapping[str, Mapping[str, str]],
    settings: Settings,
) -> dict[str, Any]:
    """A kind's cursor and how far it trails Accurate's clock."""
    entry: dict[str, Any] = {"kind": kind, "cursor": None, "age_s": None}
    if feed is ChangeFeed.TRANS_DATE:
        # These kinds have no cursor: each poll re-lists a date window.
        entry["feed"] = "transDate window"
        return entry
    row = cursors.get(kind)
    if row is None:
        return entry
    entry["cursor"] = row["last_update"]
    entry["updated_at"] = row["updated_at"]
    try:
        now = accurate_now(settings.accurate.timezone)
        age = now - parse_last_update(row["last_update"])
        entry["age_s"] = int(age.total_seconds())
    except ValueError:
        pass  # an unparsable cursor has no age; the value itself is shown
    return entry


def _next_full_sync(settings: Settings) -> str | None:
    trigger = CronTrigger.from_crontab(
        settings.sync.full_sync_cron, timezone=settings.accurate.timezone
    )
    fire: datetime | None = trigger.get_next_fire_time(None, utc_now())
    return fire.isoformat() if fire else None


# -- mapping --------------------------------------------------------------------


async def mapping_report(settings: Settings) -> dict[str, Any]:
    state = await State.open(settings.state_path)
    try:
        items = await state.items()
        overrides = await state.overrides()
        skus = await state.forstok_skus()
        export = await state.get_meta("forstok_export")
        unknown = await state.unknown_targets()
        known_warehouses = await state.warehouses()
    finally:
        await state.close()

    result = resolve_mapping(items, overrides, skus)
    warehouses = _warehouse_status(settings, known_warehouses)
    pushed_to = _forstok_warehouses(warehouses)
    report: dict[str, Any] = {
        "forstok_export": {
            "imported": skus is not None,
            "source": export,
            "skus": len(skus or []),
        },
        "warehouses": warehouses,
        "unknown_warehouses": [w for w in warehouses if w["status"] != "ok"],
        "accurate_warehouses_not_configured": sorted(
            w["name"]
            for w in known_warehouses
            if w["name"] not in {c.accurate for c in settings.warehouses}
        ),
        "mapped": _mapped(result, pushed_to, unknown),
        "unmapped": _unmapped(result, unknown),
        "conflicts": [
            {"items": list(p.item_nos), "skus": list(p.skus), "detail": p.detail}
            for p in result.problems_of("conflict")
        ],
        "excluded": _items_of(result, "excluded"),
        "suspended": _items_of(result, "suspended"),
        "services_ignored": result.ignored,
        "unused_overrides": [
            {"item": o.item_no, "forstok_sku": o.forstok_sku}
            for o in unused_overrides(items, overrides)
        ],
    }
    report["summary"] = {
        key: len(report[key])
        for key in ("mapped", "unmapped", "conflicts", "excluded", "suspended")
    } | {"unknown_warehouses": len(report["unknown_warehouses"])}
    return report


def _warehouse_status(
    settings: Settings, known: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each configured warehouse checked against Accurate's list as last read."""
    by_name = {w["name"]: w for w in known}
    rows = []
    for mapping in settings.warehouses:
        found = by_name.get(mapping.accurate)
        if not known:
            status = "not read yet"
        elif found is None:
            status = "not found in Accurate"
        elif found["suspended"]:
            status = "suspended in Accurate"
        else:
            status = "ok"
        rows.append(
            {
                "accurate": mapping.accurate,
                "accurate_id": found["id"] if found else None,
                "forstok_id": mapping.forstok_id,
                "status": status,
            }
        )
    return rows


def _forstok_warehouses(warehouses: Iterable[Mapping[str, Any]]) -> list[int]:
    """Forstok warehouses whose every source exists: the ones pushed to."""
    blocked = {w["forstok_id"] for w in warehouses if w["status"] != "ok"}
    return sorted({w["forstok_id"] for w in warehouses} - blocked)


def _mapped(
    result: MappingResult,
    forstok_ids: list[int],
    unknown: Mapping[tuple[str, int], Any],
) -> list[dict[str, Any]]:
    return [
        {
            "item": t.item_no,
            "sku": t.sku,
            "pack_size": str(t.pack_size),
            "forstok_warehouses": [i for i in forstok_ids if (t.sku, i) not in unknown],
        }
        for t in sorted(result.targets.values(), key=lambda t: t.item_no)
    ]


def _unmapped(
    result: MappingResult, unknown: Mapping[tuple[str, int], Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Items without a Forstok SKU, then pairs Forstok answered "not found"."""
    rows: list[dict[str, Any]] = [
        {
            "item": p.item_nos[0],
            "sku": p.skus[0] if p.skus else None,
            "forstok_warehouse": None,
            "why": p.detail,
        }
        for p in result.problems_of("unmapped")
    ]
    items = {t.sku: t.item_no for t in result.targets.values()}
    rows += [
        {
            "item": items.get(sku),
            "sku": sku,
            "forstok_warehouse": wh,
            "why": f"Forstok answered {mark['reason']!r} at {mark['at']}",
        }
        for (sku, wh), mark in sorted(unknown.items())
    ]
    return rows


def _items_of(result: MappingResult, kind: str) -> list[dict[str, Any]]:
    return [
        {"item": p.item_nos[0], "detail": p.detail} for p in result.problems_of(kind)
    ]


# -- history --------------------------------------------------------------------


async def history_report(settings: Settings, query: str, limit: int) -> dict[str, Any]:
    """Pushes for a SKU, newest first; the query may be any spelling of the
    SKU or of the Accurate item number, as the mapping matches them."""
    state = await State.open(settings.state_path)
    try:
        result = resolve_mapping(
            await state.items(), await state.overrides(), await state.forstok_skus()
        )
        skus = sorted(skus_matching(query, result) | {query})
        rows = [row for sku in skus for row in await state.history(sku, limit)]
    finally:
        await state.close()

    rows.sort(key=lambda row: (row["at"], row["id"]), reverse=True)
    return {
        "query": query,
        "skus": skus,
        "retention_days": settings.sync.history_days,
        "pushes": [
            {
                "at": row["at"],
                "sku": row["sku"],
                "warehouse": row["forstok_warehouse"],
                "old": row["old"],
                "new": row["new"],
                "reason": row["reason"],
                "outcome": row["outcome"],
            }
            for row in rows[:limit]
        ],
    }


# -- text -----------------------------------------------------------------------


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[str]:
    """Rows as aligned text columns under a header; None shows as `-`."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [
        max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    return [line.rstrip() for line in lines]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) or "-"
    return str(value)


def _section(
    title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> list[str]:
    if not rows:
        return []
    return ["", f"{title} ({len(rows)})", *table(rows, columns)]


def age(seconds: float | None) -> str:
    """A duration as a person reads it: `45 s`, `12 min`, `3 h 5 min`, `2 d`."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d"


def status_text(report: Mapping[str, Any]) -> str:
    lines = [f"daemon          {_daemon_line(report)}"]
    lines.append(f"state           {report['state_path']}")
    if not report.get("state_exists"):
        lines.append("                (no state yet: the daemon has never run)")
    lines.append(f"dry run         {_cell(report['dry_run'])} (sync.dry_run)")
    if report.get("state_exists"):
        lines.append(f"last poll       {_run_line(report['last_poll'])}")
        lines.append(f"last full sync  {_run_line(report['last_full_sync'])}")
    lines.append(f"next full sync  {report['next_full_sync'] or '-'}")
    if not report.get("state_exists"):
        return "\n".join(lines)

    lines.append(
        f"waiting         {report['pairs_waiting']} pairs to read from Accurate, "
        f"{report['pushes_waiting']} pushes to send"
    )
    lines.append(
        f"failing         {report['pushes_held']} held, "
        f"{report['pushes_retrying']} waiting to retry, "
        f"{len(report['not_found_in_forstok'])} not found in Forstok"
    )
    cursors = [
        {**c, "age": age(c["age_s"]), "cursor": c["cursor"] or c.get("feed")}
        for c in report["cursors"]
    ]
    lines += ["", *table(cursors, ["kind", "cursor", "age"])]
    lines += _section(
        "failing pushes",
        report["pushes_failing"],
        ["sku", "warehouse", "quantity", "attempts", "held", "retry_at", "reason"],
    )
    lines += _section(
        "not found in Forstok (pushes stopped; fix, then `stocksync retry SKU`)",
        report["not_found_in_forstok"],
        ["sku", "warehouse", "at", "reason"],
    )
    return "\n".join(lines)


def _daemon_line(report: Mapping[str, Any]) -> str:
    daemon = report.get("daemon")
    if not report["running"] or daemon is None:
        return "not running"
    text = f"running, pid {daemon['pid'] or '?'}"
    if daemon["host"]:
        text += f" on {daemon['host']}"
    if daemon["started"]:
        text += f", since {daemon['started']}"
    return text


def _run_line(run: Mapping[str, Any] | None) -> str:
    if run is None:
        return "never"
    counts = run["counts"] or {}
    shown = ", ".join(
        f"{counts[key]} {key.replace('_', ' ')}"
        for key in ("documents", "pairs_read", "pushed", "held", "unmapped", "errors")
        if counts.get(key)
    )
    text = f"{run['finished_at']}, took {run['duration_s']} s, {run['outcome']}"
    if shown:
        text += f": {shown}"
    if run["error"]:
        text += f" ({run['error']})"
    return text


def mapping_text(report: Mapping[str, Any]) -> str:
    summary = report["summary"]
    export = report["forstok_export"]
    lines = [
        "summary  "
        + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in summary.items()),
        "export   "
        + (
            f"{export['skus']} Forstok SKUs from {export['source']}"
            if export["imported"]
            else "none imported: each item's number is its Forstok SKU"
        ),
    ]
    if report["services_ignored"]:
        lines.append(f"ignored  {report['services_ignored']} non-inventory items")
    lines += ["", *table(report["warehouses"], ["accurate", "forstok_id", "status"])]
    if report["accurate_warehouses_not_configured"]:
        names = ", ".join(report["accurate_warehouses_not_configured"])
        lines.append(f"Accurate warehouses not in the configuration: {names}")
    lines += _section(
        "conflicts (nothing pushed)", report["conflicts"], ["items", "skus", "detail"]
    )
    lines += _section(
        "unmapped", report["unmapped"], ["item", "sku", "forstok_warehouse", "why"]
    )
    lines += _section("excluded", report["excluded"], ["item", "detail"])
    lines += _section("suspended", report["suspended"], ["item", "detail"])
    lines += _section(
        "overrides naming no Accurate item",
        report["unused_overrides"],
        ["item", "forstok_sku"],
    )
    lines += _section(
        "mapped", report["mapped"], ["item", "sku", "pack_size", "forstok_warehouses"]
    )
    return "\n".join(lines)


def history_text(report: Mapping[str, Any]) -> str:
    head = (
        f"pushes for {', '.join(report['skus'])}, newest first "
        f"(kept {report['retention_days']} days)"
    )
    if not report["pushes"]:
        return f"{head}\nnone recorded"
    columns = ["at", "sku", "warehouse", "old", "new", "outcome", "reason"]
    return "\n".join([head, *table(report["pushes"], columns)])
