"""What `stocksync status`, `mapping` and `history` show: plain data, then text.

Each report is built as a dictionary (printed as JSON with `--json`, for
scripts) and rendered from that same dictionary as tables for a person, so
the two never disagree. Reports only read the state file; the lock is asked
through the kernel (`daemon.lock.read_holder`), never the file's contents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from daemon.config import Settings
from daemon.kinds import KINDS, ChangeFeed
from daemon.lock import Holder, read_holder
from daemon.mapping import (
    Item,
    MappingResult,
    Override,
    normalize_sku,
    resolve_mapping,
    skus_matching,
    unused_overrides,
)
from daemon.state import State
from daemon.sync import FIRST_CURSOR, stale_pushes
from daemon.timefmt import accurate_now, parse_last_update, utc_now

_SPACING = re.compile(r"\s+")
_MISSING = {"not found in Accurate", "suspended in Accurate"}

# Keys of the state's meta table that the daemon writes for status.
SETTINGS_KEY = "daemon_settings"
"""The settings the running process uses, recorded at its start."""
PUSH_PROBLEM_KEY = "push_problem"
"""What stops pushes now (JSON), or `null`."""
LAST_PUSH_KEY = "last_push"
"""The daemon's last push round that did something (JSON)."""

# -- settings -------------------------------------------------------------------


def settings_summary(settings: Settings, dry_run: bool) -> dict[str, Any]:
    """The settings that shape what the daemon does, by key path, as JSON
    values and without any secret: recorded by the daemon at its start, and
    compared by status with the configuration file as it is now."""
    return {
        "sync.dry_run": dry_run,
        "sync.poll_interval": settings.sync.poll_interval,
        "sync.lookback": settings.sync.lookback,
        "sync.full_sync_cron": settings.sync.full_sync_cron,
        "sync.history_days": settings.sync.history_days,
        "accurate.timezone": settings.accurate.timezone,
        "accurate.auth": settings.accurate.auth,
        "accurate.requests_per_second": settings.accurate.requests_per_second,
        "forstok.batch_size": settings.forstok.batch_size,
        "forstok.requests_per_minute": settings.forstok.requests_per_minute,
        "warehouses": [
            {
                "accurate": w.accurate,
                "forstok_id": w.forstok_id,
                "buffer": w.rules.buffer,
                "percent": w.rules.percent,
                "max": w.rules.max,
            }
            for w in settings.warehouses
        ],
        "state_path": str(settings.state_path),
        "log.level": settings.log.level,
    }


def _settings_in_use(
    settings: Settings, recorded: Mapping[str, Any] | None, holder: Holder | None
) -> dict[str, Any]:
    """The running daemon's settings when it recorded them, else the file's
    (what the next start will use); and where the file now differs."""
    in_file = settings_summary(settings, settings.sync.dry_run)
    if (
        holder is not None
        and isinstance(recorded, dict)
        and recorded.get("pid") == holder.pid
        and isinstance(recorded.get("settings"), dict)
    ):
        used, source = {**in_file, **recorded["settings"]}, "running daemon"
        dry_run_from = str(recorded.get("dry_run_from", "sync.dry_run"))
    else:
        # Nothing runs, or it did not record (an older version): the file
        # is what the next start will use.
        used, source, dry_run_from = in_file, "config file", "sync.dry_run"
    differs = [
        {"key": key, "daemon": used.get(key), "file": value}
        for key, value in in_file.items()
        if used.get(key) != value
        # --dry-run on the command line overrides the file on purpose.
        and not (key == "sync.dry_run" and dry_run_from == "--dry-run")
    ]
    return {
        "dry_run": bool(used["sync.dry_run"]),
        "dry_run_from": dry_run_from,
        "settings": {"source": source, "values": used, "config_differs": differs},
        "next_full_sync": _next_full_sync(
            used["sync.full_sync_cron"], used["accurate.timezone"]
        ),
    }


# -- status ---------------------------------------------------------------------


async def status_report(settings: Settings) -> dict[str, Any]:
    try:
        holder = read_holder(settings.state_path)
        running: bool | None = holder is not None
    except PermissionError:
        # Says nothing about the daemon: only that we may not ask.
        holder, running = None, None
    report: dict[str, Any] = {
        "running": running,
        "daemon": _holder(holder),
        "state_path": str(settings.state_path),
    }
    if not settings.state_path.exists():
        # Opening would create the file; a status must not change anything.
        report.update(_settings_in_use(settings, None, None))
        report["state_exists"] = False
        return report

    state = await State.open(settings.state_path)
    try:
        recorded = _json(await state.get_meta(SETTINGS_KEY))
        report.update(_settings_in_use(settings, recorded, holder))
        report.update(await _status_from_state(state, settings))
    finally:
        await state.close()
    return report


def _json(text: str | None) -> Any:
    """A JSON value the daemon stored; None when absent or unreadable."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


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
        "last_push": _json(await state.get_meta(LAST_PUSH_KEY)),
        "push_problem": _json(await state.get_meta(PUSH_PROBLEM_KEY)),
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
    entry: dict[str, Any] = {
        "kind": kind,
        "cursor": None,
        "age_s": None,
        "no_documents_yet": False,
    }
    if feed is ChangeFeed.TRANS_DATE:
        # These kinds have no cursor: each poll re-lists a date window.
        entry["feed"] = "transDate window"
        return entry
    row = cursors.get(kind)
    if row is None:
        return entry
    entry["cursor"] = row["last_update"]
    entry["updated_at"] = row["updated_at"]
    if row["last_update"] == FIRST_CURSOR:
        # Not a date the kind reached: Accurate had no document of it yet,
        # and an "age" of decades would read as a stalled poll.
        entry["no_documents_yet"] = True
        return entry
    try:
        now = accurate_now(settings.accurate.timezone)
        age = now - parse_last_update(row["last_update"])
        entry["age_s"] = int(age.total_seconds())
    except ValueError:
        pass  # an unparsable cursor has no age; the value itself is shown
    return entry


def _next_full_sync(cron: str, timezone: str) -> str | None:
    trigger = CronTrigger.from_crontab(cron, timezone=timezone)
    fire: datetime | None = trigger.get_next_fire_time(None, utc_now())
    return fire.isoformat() if fire else None


# -- mapping --------------------------------------------------------------------


@dataclass
class _MappingInputs:
    """What the mapping is computed from, as the state holds it."""

    items: list[Item] = field(default_factory=list)
    overrides: dict[str, Override] = field(default_factory=dict)
    skus: list[str] | None = None
    export: str | None = None
    unknown: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    warehouses: list[dict[str, Any]] = field(default_factory=list)
    result: MappingResult = field(default_factory=MappingResult)
    stale: dict[tuple[str, int], int] = field(default_factory=dict)
    """What was last pushed to SKUs no item claims any more."""


async def _mapping_inputs(settings: Settings) -> _MappingInputs:
    if not settings.state_path.exists():
        return _MappingInputs()  # nothing learned yet; opening would create it
    state = await State.open(settings.state_path)
    try:
        got = _MappingInputs(
            await state.items(),
            await state.overrides(),
            await state.forstok_skus(),
            await state.get_meta("forstok_export"),
            await state.unknown_targets(),
            await state.warehouses(),
        )
        got.result = resolve_mapping(got.items, got.overrides, got.skus)
        got.stale = await stale_pushes(state, got.result)
        return got
    finally:
        await state.close()


async def mapping_report(settings: Settings) -> dict[str, Any]:
    got = await _mapping_inputs(settings)
    result = got.result
    warehouses = _warehouse_status(settings, got.warehouses)
    configured = {c.accurate for c in settings.warehouses}
    report: dict[str, Any] = {
        "state_exists": settings.state_path.exists(),
        "forstok_export": {
            "imported": got.skus is not None,
            "source": got.export,
            "skus": len(got.skus or []),
        },
        "warehouses": warehouses,
        "unknown_warehouses": [w for w in warehouses if w["status"] in _MISSING],
        "accurate_warehouses_not_configured": sorted(
            w["name"] for w in got.warehouses if w["name"] not in configured
        ),
        "mapped": _mapped(result, _forstok_warehouses(warehouses), got.unknown),
        "unmapped": _unmapped(result, got.unknown),
        "conflicts": [
            {"items": list(p.item_nos), "skus": list(p.skus), "detail": p.detail}
            for p in result.problems_of("conflict")
        ],
        "excluded": _items_of(result, "excluded"),
        "suspended": _items_of(result, "suspended"),
        "services_ignored": result.ignored,
        "unused_overrides": [
            {"item": o.item_no, "forstok_sku": o.forstok_sku}
            for o in unused_overrides(got.items, got.overrides)
        ],
        "stale_skus": [
            {"sku": sku, "forstok_warehouse": w, "last_pushed": n}
            for (sku, w), n in sorted(got.stale.items())
        ],
    }
    counted = ("mapped", "unmapped", "conflicts", "excluded", "suspended")
    report["summary"] = {key: len(report[key]) for key in counted} | {
        "unknown_warehouses": len(report["unknown_warehouses"])
    }
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
    blocked = {w["forstok_id"] for w in warehouses if w["status"] in _MISSING}
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
            "at": None,
        }
        for p in result.problems_of("unmapped")
    ]
    items = {t.sku: t.item_no for t in result.targets.values()}
    rows += [
        {
            "item": items.get(sku),
            "sku": sku,
            "forstok_warehouse": wh,
            "why": f"Forstok answered {mark['reason']!r}",
            "at": mark["at"],
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
    if not settings.state_path.exists():
        return _history_of(query, [], [], settings) | {"match": "no state"}
    state = await State.open(settings.state_path)
    try:
        items = await state.items()
        result = resolve_mapping(
            items, await state.overrides(), await state.forstok_skus()
        )
        mapped = skus_matching(query, result)
        # The query itself too: a SKU no longer mapped keeps its history.
        rows = [
            row for sku in mapped | {query} for row in await state.history(sku, limit)
        ]
    finally:
        await state.close()

    report = _history_of(query, mapped, rows, settings, limit)
    report["match"] = _match(query, mapped, rows, items)
    return report


def _match(
    query: str, mapped: set[str], rows: Sequence[Any], items: Iterable[Item]
) -> str:
    """How the query was recognised: `mapped` (a SKU stocksync pushes),
    `history` (a SKU pushed before), `item` (an Accurate item without a
    Forstok SKU) or `unknown`."""
    if mapped:
        return "mapped"
    if rows:
        return "history"
    wanted = normalize_sku(query)
    if any(normalize_sku(item.no) == wanted for item in items):
        return "item"
    return "unknown"


def _history_of(
    query: str,
    mapped: Iterable[str],
    rows: Iterable[Mapping[str, Any]],
    settings: Settings,
    limit: int = 0,
) -> dict[str, Any]:
    newest = sorted(rows, key=lambda row: (row["at"], row["id"]), reverse=True)
    return {
        "query": query,
        "skus": sorted(set(mapped) | {row["sku"] for row in newest}),
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
            for row in newest[:limit]
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
    text = str(value)
    # SKUs that differ only in spacing must look different on screen (C12).
    if isinstance(value, str) and _SPACING.sub(" ", text).strip() != text:
        return repr(text)
    return text


def when(value: str | None) -> str:
    """A stored UTC instant as a person reads it: `2026-02-01 03:04:05 UTC`."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.utcoffset() == timedelta(0):
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return moment.isoformat(sep=" ", timespec="seconds")


def _with_times(rows: Sequence[Mapping[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return [{**row, **{k: when(row.get(k)) for k in keys}} for row in rows]


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


_NEVER_RUN = "no state yet: the daemon has never run"


def status_text(report: Mapping[str, Any]) -> str:
    lines = [f"daemon          {_daemon_line(report)}"]
    lines.append(f"state           {report['state_path']}")
    if not report.get("state_exists"):
        lines.append(f"                ({_NEVER_RUN})")
    lines.append(
        f"dry run         {_cell(report['dry_run'])} ({report['dry_run_from']})"
    )
    lines += _config_differs_lines(report["settings"])
    if report.get("state_exists"):
        lines.append(f"last poll       {_run_line(report['last_poll'])}")
        if report["last_push"]:
            lines.append(f"last push       {_push_line(report['last_push'])}")
        lines.append(f"last full sync  {_run_line(report['last_full_sync'])}")
        if report["push_problem"]:
            said = (report["last_full_sync"] or {}).get("error") or ""
            problem = _problem_line(report["push_problem"], said)
            if report["running"] is False:
                problem += " (when it last ran)"
            lines.append(f"pushes          {problem}")
    lines.append(f"next full sync  {when(report['next_full_sync'])}")
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
        {**c, "age": age(c["age_s"]), "cursor": _cursor_cell(c)}
        for c in report["cursors"]
    ]
    lines += ["", *table(cursors, ["kind", "cursor", "age"])]
    lines += _section(
        "failing pushes",
        _with_times(report["pushes_failing"], "retry_at"),
        ["sku", "warehouse", "quantity", "attempts", "held", "retry_at", "reason"],
    )
    lines += _section(
        "not found in Forstok (pushes stopped; fix, then `stocksync retry SKU`)",
        _with_times(report["not_found_in_forstok"], "at"),
        ["sku", "warehouse", "at", "reason"],
    )
    return "\n".join(lines)


def _cursor_cell(cursor: Mapping[str, Any]) -> str | None:
    if cursor.get("no_documents_yet"):
        return "no documents yet"
    return cursor["cursor"] or cursor.get("feed")


def _config_differs_lines(settings: Mapping[str, Any]) -> list[str]:
    """Where the configuration file no longer says what the daemon uses."""
    if not settings["config_differs"]:
        return []
    lines = ["config file     changed since the daemon started; restart it to apply:"]
    lines += [
        f"                  {d['key']}: daemon {_setting(d['daemon'])}, "
        f"file {_setting(d['file'])}"
        for d in settings["config_differs"]
    ]
    return lines


def _setting(value: Any) -> str:
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    return _cell(value)


_PROBLEMS = {
    "forstok_credentials_rejected": "Forstok refused the credentials",
    "forstok_unavailable": "Forstok unavailable",
    "push_failed": "Forstok refused the push requests",
}


def _problem_line(problem: Mapping[str, Any], said: str) -> str:
    """Why pushes stop; the error itself only if the line above lacks it."""
    what = _PROBLEMS.get(problem["event"], problem["event"])
    text = f"not sent: {what} since {when(problem['since'])}"
    if problem.get("until"):
        text += f", paused until {when(problem['until'])}"
    if problem["error"] in said:
        return text
    return f"{text} ({problem['error']})"


def _push_line(push: Mapping[str, Any]) -> str:
    counts = push.get("counts") or {}
    shown = ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in counts.items() if n)
    return f"{when(push['finished_at'])}, took {push['elapsed_s']} s: {shown}"


def _daemon_line(report: Mapping[str, Any]) -> str:
    daemon = report.get("daemon")
    if report["running"] is None:
        return "unknown: the lock file may not be opened (run as the service user)"
    if not report["running"] or daemon is None:
        return "not running"
    text = f"running, pid {daemon['pid'] or '?'}"
    if daemon["host"]:
        text += f" on {daemon['host']}"
    if daemon["started"]:
        text += f", since {when(daemon['started'])}"
    if daemon["command"]:
        text += f" ({daemon['command']})"
    return text


_RUN_COUNTS = (
    "documents",
    "pairs_read",
    "pushed",
    "would_push",
    "held",
    "unmapped",
    "errors",
)


def _run_line(run: Mapping[str, Any] | None) -> str:
    if run is None:
        return "never"
    counts = run["counts"] or {}
    shown = ", ".join(
        f"{counts[key]} {key.replace('_', ' ')}"
        for key in _RUN_COUNTS
        if counts.get(key)
    )
    outcome = str(run["outcome"]).replace("_", " ")
    text = f"{when(run['finished_at'])}, took {run['duration_s']} s, {outcome}"
    if shown:
        text += f": {shown}"
    if run["error"]:
        text += f" ({run['error']})"
    return text


def mapping_text(report: Mapping[str, Any]) -> str:
    summary = report["summary"]
    export = report["forstok_export"]
    lines = [] if report["state_exists"] else [_NEVER_RUN]
    lines += [
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
        "SKUs no Accurate item has any more (Forstok keeps these quantities)",
        report["stale_skus"],
        ["sku", "forstok_warehouse", "last_pushed"],
    )
    lines += _section(
        "mapped", report["mapped"], ["item", "sku", "pack_size", "forstok_warehouses"]
    )
    return "\n".join(lines)


def history_text(report: Mapping[str, Any]) -> str:
    query = report["query"]
    if report.get("match") == "no state":
        return f"{_NEVER_RUN}: nothing was pushed for {query!r} yet"
    if report.get("match") == "unknown":
        return (
            f"no Forstok SKU or Accurate item matches {query!r}; "
            "`stocksync mapping` lists the mapped items"
        )
    if report.get("match") == "item":
        return (
            f"Accurate item {query!r} has no Forstok SKU, so nothing is pushed "
            "for it; `stocksync mapping` says why"
        )
    skus = ", ".join(report["skus"]) or query
    head = f"pushes for {skus}, newest first (kept {report['retention_days']} days)"
    if not report["pushes"]:
        return f"{head}\nnone recorded"
    columns = ["at", "sku", "warehouse", "old", "new", "outcome", "reason"]
    return "\n".join([head, *table(_with_times(report["pushes"], "at"), columns)])
