"""Delivery latency: from a document's commit in the simulator to Forstok.

The simulated database calls `on_commit` right after a document's stock
effect is applied. For every mapped (SKU, Forstok warehouse) whose offered
quantity that commit changes, the tracker notes the moment and the new
value. Afterwards each such change counts as delivered at the first push to
Forstok, at or after the commit, of that value or of a value a later commit
set (a later change overtakes an earlier one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from daemon.simulator.app import Simulator
from daemon.simulator.documents import Document

Target = tuple[str, int]

TRANS_DATE_KINDS = frozenset({"vendor-claim", "material-slip", "finished-good-slip"})
"""Kinds 14, 16 and 17: no lastUpdate filter, listed by a transDate window."""
TRANS_DATE_DAYS = 7


@dataclass(frozen=True)
class Change:
    target: Target
    value: int
    at: datetime
    document: str
    """Kind, transaction date and lastUpdate of the document that made it."""
    out_of_window: bool
    """A kind listed by transaction date, dated before the daemon's window:
    by design left to the full sync (README, "The seventeen kinds")."""


@dataclass(frozen=True)
class Delays:
    changes: int
    delivered: int
    p50_s: float
    p95_s: float
    max_s: float
    undelivered: tuple[str, ...] = ()
    """The documents behind changes never delivered."""
    unexplained: int = 0
    """Changes never delivered that no designed limit explains."""


def offered(quantity: Decimal) -> int:
    """The quantity Forstok should hold: never negative, whole units."""
    return int(max(quantity, Decimal(0)).to_integral_value(rounding=ROUND_FLOOR))


class DeliveryTracker:
    def __init__(self, sim: Simulator, warehouses: dict[str, int]) -> None:
        self.sim = sim
        model = sim.accurate
        self.forstok_of = {
            model.warehouse_by_name(name).id: fid for name, fid in warehouses.items()
        }
        self.current: dict[Target, int] = {}
        for (item_id, wh_id), quantity in model.stock.items():
            if wh_id in self.forstok_of:
                target = (model.items[item_id].no, self.forstok_of[wh_id])
                self.current[target] = offered(quantity)
        self.changes: list[Change] = []
        self.documents = 0
        self.history_start = len(sim.forstok.history_of())

    def on_commit(self, doc: Document) -> None:
        """Runs under the simulator's lock, right after the effect is applied."""
        model = self.sim.accurate
        moment = self.sim.config.clock.now()
        self.documents += 1
        for item_id, wh_id in {(i, w) for i, w, _ in doc.applied}:
            if wh_id not in self.forstok_of:
                continue
            target = (model.items[item_id].no, self.forstok_of[wh_id])
            value = offered(model.stock.get((item_id, wh_id), Decimal(0)))
            if self.current.get(target, 0) != value:
                self.current[target] = value
                change = Change(
                    target, value, moment, _describe(doc), self._out_of_window(doc)
                )
                self.changes.append(change)

    def _out_of_window(self, doc: Document) -> bool:
        today = self.sim.accurate.now_stamp().date()
        return doc.kind in TRANS_DATE_KINDS and doc.trans_date < today - timedelta(
            days=TRANS_DATE_DAYS
        )

    def delays(self) -> Delays:
        pushes: dict[Target, list[tuple[datetime, int]]] = {}
        for push in self.sim.forstok.history_of()[self.history_start :]:
            moment = datetime.fromisoformat(push.time)
            pushes.setdefault((push.sku, push.warehouse_id), []).append(
                (moment, push.new)
            )
        later: dict[Target, list[Change]] = {}
        for change in self.changes:
            later.setdefault(change.target, []).append(change)

        seconds, missed, unexplained = [], set(), 0
        for change in self.changes:
            wanted = {c.value for c in later[change.target] if c.at >= change.at}
            arrival = next(
                (
                    moment
                    for moment, value in pushes.get(change.target, [])
                    if moment >= change.at and value in wanted
                ),
                None,
            )
            if arrival is not None:
                seconds.append((arrival - change.at).total_seconds())
            else:
                missed.add(change.document)
                unexplained += not change.out_of_window
        delays = _summary(len(self.changes), sorted(seconds), tuple(sorted(missed)))
        return replace(delays, unexplained=unexplained)


def _describe(doc: Document) -> str:
    return (
        f"{doc.kind} dated {doc.trans_date:%d/%m/%Y}, "
        f"lastUpdate {doc.last_update:%d/%m/%Y %H:%M:%S}"
    )


def _summary(changes: int, seconds: list[float], missed: tuple[str, ...]) -> Delays:
    if not seconds:
        return Delays(changes, 0, math.nan, math.nan, math.nan, missed)
    return Delays(
        changes,
        len(seconds),
        _percentile(seconds, 50),
        _percentile(seconds, 95),
        seconds[-1],
        missed,
    )


def _percentile(ordered: list[float], percent: int) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]
