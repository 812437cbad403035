"""Which Forstok SKU an Accurate item is, and how many units to offer.

Pure functions over plain data. The rules here decide what reaches the
marketplace, so each refuses to guess: an item whose SKU collides with
another's, or whose pack size is unknown, is reported and left out.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal

from daemon.config import StockRules

_WHITESPACE = re.compile(r"\s+")


def normalize_sku(raw: str) -> str:
    """The one form in which SKUs from both sides are compared (C12, C13).

    NFKC folds look-alike characters (a no-break space becomes a space),
    whitespace is trimmed and collapsed, and `casefold` handles letters
    beyond ASCII, which SQLite's NOCASE would not.
    """
    text = unicodedata.normalize("NFKC", raw)
    return _WHITESPACE.sub(" ", text).strip().casefold()


@dataclass(frozen=True)
class Item:
    id: int
    no: str
    item_type: str = "INVENTORY"
    suspended: bool = False


@dataclass(frozen=True)
class Override:
    """An operator's explicit mapping for one Accurate item number."""

    item_no: str
    forstok_sku: str | None = None
    pack_size: Decimal = Decimal(1)
    excluded: bool = False


@dataclass(frozen=True)
class Target:
    item_id: int
    item_no: str
    sku: str
    pack_size: Decimal


@dataclass(frozen=True)
class Problem:
    kind: str
    """`conflict`, `unmapped`, `excluded`, `suspended` or `not_inventory`."""
    item_nos: tuple[str, ...]
    detail: str


@dataclass
class MappingResult:
    targets: dict[int, Target] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def problems_of(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]


def resolve_mapping(
    items: Iterable[Item],
    overrides: Mapping[str, Override],
    forstok_skus: Iterable[str] | None,
) -> MappingResult:
    """Decide the Forstok SKU of every item, or why it has none.

    `forstok_skus` is the imported Forstok product export; when there is
    none, an item's SKU is its Accurate number exactly as Accurate spells it.
    """
    result = MappingResult()
    catalogue = _catalogue(forstok_skus, result) if forstok_skus is not None else None

    candidates: dict[str, list[Target]] = defaultdict(list)
    for item in items:
        target = _target(item, overrides.get(item.no), catalogue, result)
        if target is not None:
            candidates[normalize_sku(target.sku)].append(target)

    for norm, targets in candidates.items():
        if len(targets) > 1:
            nos = tuple(sorted(t.item_no for t in targets))
            result.problems.append(
                Problem("conflict", nos, f"items {nos!r} all map to SKU {norm!r}")
            )
            continue
        result.targets[targets[0].item_id] = targets[0]
    return result


def _catalogue(skus: Iterable[str], result: MappingResult) -> dict[str, str]:
    """Normalised SKU to raw spelling; spellings that collide are dropped."""
    spellings: dict[str, set[str]] = defaultdict(set)
    for sku in skus:
        spellings[normalize_sku(sku)].add(sku)
    catalogue = {}
    for norm, raws in spellings.items():
        if len(raws) > 1:
            shown = tuple(sorted(raws))
            result.problems.append(
                Problem(
                    "conflict",
                    shown,
                    f"Forstok SKUs {shown!r} differ only in case or spacing",
                )
            )
            continue
        catalogue[norm] = next(iter(raws))
    return catalogue


def _target(
    item: Item,
    override: Override | None,
    catalogue: Mapping[str, str] | None,
    result: MappingResult,
) -> Target | None:
    if item.item_type != "INVENTORY":
        return None
    if override is not None and override.excluded:
        result.problems.append(
            Problem("excluded", (item.no,), "excluded by the operator")
        )
        return None
    if item.suspended:
        result.problems.append(
            Problem("suspended", (item.no,), "suspended in Accurate")
        )
        return None

    wanted = override.forstok_sku if override and override.forstok_sku else item.no
    pack_size = override.pack_size if override else Decimal(1)
    if catalogue is None:
        return Target(item.id, item.no, wanted, pack_size)

    sku = catalogue.get(normalize_sku(wanted))
    if sku is None:
        result.problems.append(
            Problem("unmapped", (item.no,), f"no Forstok SKU matches {wanted!r}")
        )
        return None
    return Target(item.id, item.no, sku, pack_size)


def offered_quantity(
    balances: Iterable[Decimal], pack_size: Decimal, rules: StockRules
) -> int:
    """The whole number of units a Forstok warehouse offers.

    Steps, in this order: sum the Accurate warehouses that feed it; clamp a
    negative total to 0 (C16); divide by the pack size and round down (C15);
    hold back `buffer`; offer `percent` of the rest, rounded down; cap at
    `max`. Rounding is always down, so we never offer a unit we do not have.
    """
    if pack_size <= 0:
        raise ValueError(f"pack size must be positive, got {pack_size}")
    total = max(Decimal(0), sum(balances, Decimal(0)))

    units = int((total / pack_size).to_integral_value(rounding=ROUND_FLOOR))
    units = max(0, units - rules.buffer)
    # Decimal, so that 10 units at 30% are 3, not 2.9999 rounded down to 2.
    units = math.floor(units * Decimal(str(rules.percent)) / 100)
    if rules.max is not None:
        units = min(units, rules.max)
    return units
