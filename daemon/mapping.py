"""Which Forstok SKU an Accurate item is, and how many units to offer.

Pure functions over plain data. The rules here decide what reaches the
marketplace, so each refuses to guess: an item whose SKU collides with
another's, or whose pack size is unknown, is reported and left out.
"""

from __future__ import annotations

import csv
import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

from daemon.config import StockRules

_WHITESPACE = re.compile(r"\s+")

PACK_SIZE_MIN = Decimal("0.001")
PACK_SIZE_MAX = Decimal(1_000_000)
PACK_SIZE_DECIMALS = 3
PACK_SIZE_RANGE = (
    f"from {PACK_SIZE_MIN} to {PACK_SIZE_MAX}, with at most "
    f"{PACK_SIZE_DECIMALS} decimals"
)
"""What a pack size may be (C15). It counts base units in one Forstok unit
and may be fractional (stock in kg, sold in 0.25 kg packs); beyond these
bounds it is a typo that would offer millions of units, or always 0."""


def pack_size_problem(pack: Decimal) -> str | None:
    """Why a pack size is refused, or None when it is plausible."""
    if not pack.is_finite() or pack <= 0:
        return "is not a positive number"
    if not PACK_SIZE_MIN <= pack <= PACK_SIZE_MAX:
        return f"is out of range: a pack size is {PACK_SIZE_RANGE}"
    if pack != round(pack, PACK_SIZE_DECIMALS):
        return f"has more than {PACK_SIZE_DECIMALS} decimals: a pack size is " + (
            PACK_SIZE_RANGE
        )
    return None


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
    """`conflict`, `unmapped`, `excluded` or `suspended`."""
    item_nos: tuple[str, ...]
    detail: str
    skus: tuple[str, ...] = ()
    """The Forstok SKUs involved, raw, when there are any."""


@dataclass
class MappingResult:
    targets: dict[int, Target] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    ignored: int = 0
    """Items that are not inventory (services): never synced, not a problem."""

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
    items = list(items)
    result = MappingResult()
    catalogue = _catalogue(forstok_skus, result) if forstok_skus is not None else None
    find_override = _override_finder(items, overrides)

    candidates: dict[str, list[Target]] = defaultdict(list)
    for item in items:
        target = _target(item, find_override(item), catalogue, result)
        if target is not None:
            candidates[normalize_sku(target.sku)].append(target)

    for norm, targets in candidates.items():
        if len(targets) > 1:
            nos = tuple(sorted(t.item_no for t in targets))
            skus = tuple(sorted({t.sku for t in targets}))
            result.problems.append(
                Problem("conflict", nos, f"items {nos!r} all map to SKU {norm!r}", skus)
            )
            continue
        result.targets[targets[0].item_id] = targets[0]
    return result


def _override_finder(
    items: list[Item], overrides: Mapping[str, Override]
) -> Callable[[Item], Override | None]:
    """An item's override: by its exact number, else by the normalised number.

    The normalised match lets an operator write `ABC-01` for Accurate's
    `ABC-01 `; it applies only when it picks out one item, so that two items
    in conflict can still be told apart by their exact spelling.
    """
    by_norm: dict[str, list[Override]] = defaultdict(list)
    for override in overrides.values():
        by_norm[normalize_sku(override.item_no)].append(override)
    items_by_norm: dict[str, int] = defaultdict(int)
    for item in items:
        items_by_norm[normalize_sku(item.no)] += 1

    def find(item: Item) -> Override | None:
        exact = overrides.get(item.no)
        if exact is not None:
            return exact
        norm = normalize_sku(item.no)
        loose = by_norm.get(norm, [])
        if len(loose) == 1 and items_by_norm[norm] == 1:
            return loose[0]
        return None

    return find


def unused_overrides(
    items: Iterable[Item], overrides: Mapping[str, Override]
) -> list[Override]:
    """Overrides that name no Accurate item, exactly or once normalised."""
    known = {normalize_sku(item.no) for item in items}
    return [o for o in overrides.values() if normalize_sku(o.item_no) not in known]


def stale_skus(
    pushed: Iterable[str],
    result: MappingResult,
    item_numbers: Iterable[str],
    overrides: Mapping[str, Override],
) -> set[str]:
    """The SKUs among `pushed` that no Accurate item claims any more: their
    item was renamed or deleted, and Forstok keeps their last quantity. An
    excluded or suspended item still claims its SKU: leaving it as it is
    was the operator's choice or is reported as such."""
    claimed = {normalize_sku(t.sku) for t in result.targets.values()}
    claimed |= {normalize_sku(no) for no in item_numbers}
    claimed |= {normalize_sku(o.forstok_sku or o.item_no) for o in overrides.values()}
    return {sku for sku in pushed if normalize_sku(sku) not in claimed}


def skus_matching(query: str, result: MappingResult) -> set[str]:
    """Mapped Forstok SKUs that `query` names, as the SKU or as the Accurate
    item number, in any spelling the normalisation treats as the same."""
    wanted = normalize_sku(query)
    return {
        t.sku
        for t in result.targets.values()
        if wanted in (normalize_sku(t.sku), normalize_sku(t.item_no))
    }


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
                    (),
                    f"Forstok SKUs {shown!r} differ only in case or spacing",
                    shown,
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
        result.ignored += 1
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
    bad_pack = pack_size_problem(pack_size)
    if bad_pack is not None:
        # An override stored before the bounds existed: never push with it.
        result.problems.append(
            Problem(
                "unmapped",
                (item.no,),
                f"pack_size {str(pack_size)!r} {bad_pack}; import the overrides "
                "again with a corrected pack_size",
                (wanted,),
            )
        )
        return None
    if catalogue is None:
        return Target(item.id, item.no, wanted, pack_size)

    sku = catalogue.get(normalize_sku(wanted))
    if sku is None:
        result.problems.append(
            Problem(
                "unmapped",
                (item.no,),
                f"no SKU in the Forstok export matches {wanted!r}",
                (wanted,),
            )
        )
        return None
    return Target(item.id, item.no, sku, pack_size)


def changed_targets(before: MappingResult, after: MappingResult) -> set[int]:
    """Items whose Forstok SKU or pack size is new or different in `after`.

    Their stock must be pushed again: the quantity Forstok holds was computed
    for another SKU or unit, or never sent.
    """
    return {
        item_id
        for item_id, target in after.targets.items()
        if before.targets.get(item_id) != target
    }


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


# -- mapping files ---------------------------------------------------------------

_OVERRIDE_COLUMNS = {
    "accurate_item_no": "item",
    "item_no": "item",
    "forstok_sku": "sku",
    "pack_size": "pack",
    "exclude": "exclude",
    "excluded": "exclude",
}
_OVERRIDE_NAMES = {
    "item": "the item number",
    "sku": "the Forstok SKU",
    "pack": "the pack size",
    "exclude": "the exclude flag",
}
_EXPORT_SKU_COLUMNS = {"sku", "sku_seller", "seller_sku", "forstok_sku"}
_YES = {"1", "yes", "y", "true", "x"}
_NO = {"", "0", "no", "n", "false"}


def _column_key(header: str) -> str:
    """`Accurate item no`, `accurate-item-no` and `ACCURATE_ITEM_NO` alike."""
    return re.sub(r"[\s\-]+", "_", header.strip().lower())


def parse_overrides(
    lines: Iterable[str], source: str = "mapping file"
) -> tuple[list[Override], list[str]]:
    """Read an override CSV: accurate_item_no, forstok_sku, pack_size, exclude.

    Only the item number column is required. Every problem is collected with
    its line number, so that a file is fixed in one pass; a file with any
    problem must not be imported at all.
    """
    reader = csv.reader(lines)
    header = next(reader, None) or []
    found = _columns(header, _OVERRIDE_COLUMNS.get)
    problems = [
        f"{source}: columns {_names(header, indexes)} each name "
        f"{_OVERRIDE_NAMES[key]}; keep one of them and import again"
        for key, indexes in found.items()
        if len(indexes) > 1
    ]
    if "item" not in found:
        problems.append(
            f"{source}: the first line must name the columns: accurate_item_no "
            "and optionally forstok_sku, pack_size, exclude"
        )
    if problems:
        return [], problems
    columns = {key: indexes[0] for key, indexes in found.items()}

    overrides: list[Override] = []
    seen: dict[str, tuple[str, int]] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        cells = {key: row[i] if i < len(row) else "" for key, i in columns.items()}
        override = _override_row(cells)
        if isinstance(override, str):
            problems.append(f"{source}:{line}: {override}")
            continue
        # Compared as the mapping compares them: `sku-0003` and ` SKU-0003 `
        # would both apply to one Accurate item, and only one can win.
        norm = normalize_sku(override.item_no)
        if norm in seen:
            problems.append(_repeated(source, line, override.item_no, *seen[norm]))
            continue
        seen[norm] = (override.item_no, line)
        overrides.append(override)
    return overrides, problems


def _repeated(source: str, line: int, item_no: str, first: str, at: int) -> str:
    if item_no == first:
        return f"{source}:{line}: item {item_no!r} is already on line {at}"
    return (
        f"{source}:{line}: item {item_no!r} is item {first!r} of line {at} "
        "once case and spacing are ignored; keep one of the two lines"
    )


def _columns(
    header: Iterable[str], key_of: Callable[[str], str | None]
) -> dict[str, list[int]]:
    """The positions of each known column, by key; a key named twice has two."""
    found: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(header):
        key = key_of(_column_key(name))
        if key is not None:
            found[key].append(index)
    return found


def _names(header: Sequence[str], indexes: Iterable[int]) -> str:
    return ", ".join(repr(header[i]) for i in indexes)


def _override_row(cells: Mapping[str, str]) -> Override | str:
    """The override a row states, or what is wrong with the row."""
    # The item number keeps its spacing: two Accurate items that differ only
    # in spacing can be told apart only by their exact spelling.
    item_no = cells["item"]
    if not item_no.strip():
        return "accurate_item_no is empty"
    text = cells.get("pack", "").strip() or "1"
    try:
        pack = Decimal(text)
    except InvalidOperation:
        pack = Decimal(0)
    problem = pack_size_problem(pack)
    if problem is not None:
        # `0,25` is how a decimal is written in Indonesia; say which to use.
        hint = " (write decimals with a dot: 0.25)" if "," in text else ""
        return f"pack_size {text!r} {problem}{hint}"
    flag = cells.get("exclude", "").strip().lower()
    if flag not in _YES | _NO:
        return f"exclude {flag!r} is neither yes nor no"
    sku = cells.get("sku", "").strip() or None
    return Override(item_no, sku, pack, flag in _YES)


def parse_forstok_export(
    lines: Iterable[str], source: str = "Forstok export"
) -> tuple[list[str], list[str]]:
    """The SKUs of a Forstok product export: its `SKU` column, raw.

    The values keep Forstok's spelling, because pushes must use it; other
    columns are ignored. Returns the SKUs and the problems found.
    """
    reader = csv.reader(lines)
    header = next(reader, None) or []
    found = _columns(header, lambda key: "sku" if key in _EXPORT_SKU_COLUMNS else None)
    columns = found.get("sku", [])
    if not columns:
        return [], [f"{source}: no SKU column (the first line must name one SKU)"]
    if len(columns) > 1:
        # Forstok exports may carry a master SKU beside the seller SKU; which
        # one the listings use is the operator's call, not ours.
        return [], [
            f"{source}: columns {_names(header, columns)} each name a SKU; "
            "delete or rename all but the one Forstok pushes use, and import again"
        ]
    column = columns[0]
    skus = dict.fromkeys(
        row[column] for row in reader if len(row) > column and row[column].strip()
    )
    if not skus:
        return [], [
            f"{source}: no SKU in column {header[column]!r}: with an empty "
            "export every item would be unmapped and all pushes would stop "
            "(to go back to no export, run `stocksync mapping import-forstok "
            "--clear`)"
        ]
    return list(skus), []
