"""What `stocksync status` and `stocksync mapping` show, as plain data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from daemon.config import Settings
from daemon.lock import read_holder
from daemon.mapping import resolve_mapping
from daemon.state import State
from daemon.timefmt import accurate_now, parse_last_update, utc_now


async def status_report(settings: Settings) -> dict[str, Any]:
    holder = read_holder(settings.state_path)
    state = await State.open(settings.state_path)
    try:
        runs = await state.last_runs()
        cursors = await state.cursor_rows()
        failing = await state.failing()
        report = {
            "running": holder is not None,
            "holder": holder,
            "state_path": str(settings.state_path),
            "dry_run": settings.sync.dry_run,
            "last_poll": runs.get("poll"),
            "last_full_sync": runs.get("full_sync"),
            "next_full_sync": _next_full_sync(settings),
            "cursors": [
                _cursor(row, settings)
                for row in sorted(cursors, key=lambda r: r["kind"])
            ],
            "pairs_waiting": await state.count("pending_pair"),
            "pushes_waiting": await state.count("push_queue"),
            "pushes_failing": [
                {
                    "sku": f.sku,
                    "warehouse": f.forstok_warehouse,
                    "quantity": f.quantity,
                    "attempts": f.attempts,
                    "held": f.held,
                    "reason": f.reason,
                }
                for f in failing.values()
            ],
        }
    finally:
        await state.close()
    return report


def _cursor(row: dict[str, str], settings: Settings) -> dict[str, Any]:
    entry: dict[str, Any] = dict(row)
    try:
        now = accurate_now(settings.accurate.timezone)
        entry["age_s"] = int(
            (now - parse_last_update(row["last_update"])).total_seconds()
        )
    except ValueError:
        entry["age_s"] = None
    return entry


def _next_full_sync(settings: Settings) -> str | None:
    trigger = CronTrigger.from_crontab(
        settings.sync.full_sync_cron, timezone=settings.accurate.timezone
    )
    fire: datetime | None = trigger.get_next_fire_time(None, utc_now())
    return fire.isoformat() if fire else None


async def mapping_report(settings: Settings) -> dict[str, Any]:
    state = await State.open(settings.state_path)
    try:
        items = await state.items()
        overrides = await state.overrides()
        skus = await state.forstok_skus()
        failing = await state.failing()
    finally:
        await state.close()

    result = resolve_mapping(items, overrides, skus)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for problem in result.problems:
        by_kind.setdefault(problem.kind, []).append(
            {"items": list(problem.item_nos), "detail": problem.detail}
        )
    stale = [
        {"sku": f.sku, "warehouse": f.forstok_warehouse, "reason": f.reason}
        for f in failing.values()
        if f.held and "not found" in f.reason.lower()
    ]
    return {
        "forstok_export": skus is not None,
        "mapped_items": len(result.targets),
        "warehouses": [
            {"accurate": w.accurate, "forstok_id": w.forstok_id}
            for w in settings.warehouses
        ],
        "mapped": [
            {"item": t.item_no, "sku": t.sku, "pack_size": str(t.pack_size)}
            for t in sorted(result.targets.values(), key=lambda t: t.item_no)
        ],
        "unmapped": by_kind.get("unmapped", []),
        "conflicts": by_kind.get("conflict", []),
        "excluded": by_kind.get("excluded", []),
        "suspended": by_kind.get("suspended", []),
        "stale_in_forstok": stale,
    }
