"""`list.do` mechanics over rendered rows: filters, sort, paging, fields.

Pure functions: rows come in as the dicts detail.do would show, so a filter
compares exactly what the client can read back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import unquote_plus

from daemon.simulator.clock import parse_date, parse_last_update

Row = dict[str, Any]
Convert = Callable[[str], Any]
T = TypeVar("T")


class ListError(ValueError):
    """A parameter Accurate would refuse (answered as `s:false` at HTTP 200)."""


def _as_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"not a boolean: {text!r}")
    return lowered == "true"


# How each filterable or sortable field's text is compared.
CONVERTERS: dict[str, Convert] = {
    "lastUpdate": parse_last_update,
    "transDate": parse_date,
    "id": int,
    "suspended": _as_bool,
}

OPERATORS = (
    "EQUAL",
    "NOT_EQUAL",
    "BETWEEN",
    "NOT_BETWEEN",
    "GREATER_THAN",
    "GREATER_EQUAL_THAN",
    "LESS_THAN",
    "LESS_EQUAL_THAN",
    "EMPTY",
    "NOT_EMPTY",
    "CONTAIN",
)


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Page(Generic[T]):
    rows: list[T]
    sp: dict[str, Any]


def parse_filters(params: dict[str, str]) -> list[Filter]:
    """Read `filter.<f>.op`, `filter.<f>.val` and `filter.<f>.val[i]`."""
    names = sorted(
        {key.split(".")[1] for key in params if key.startswith("filter.")} - {""}
    )
    return [_filter(name, params) for name in names]


def _filter(name: str, params: dict[str, str]) -> Filter:
    prefix = f"filter.{name}."
    op = params.get(prefix + "op", "EQUAL").strip().upper()
    if op not in OPERATORS:
        raise ListError(f"Operator {op} tidak dikenal")
    if prefix + "val" in params:
        return Filter(name, op, (params[prefix + "val"],))
    indexed = []
    index = 0
    while f"{prefix}val[{index}]" in params:
        indexed.append(params[f"{prefix}val[{index}]"])
        index += 1
    return Filter(name, op, tuple(indexed))


def apply_filters(
    rows: list[Row], filters: Sequence[Filter], allowed: set[str]
) -> list[Row]:
    """Keep matching rows; a filter on a field not in `allowed` is ignored,
    silently, as Accurate does (reference §5)."""
    for flt in filters:
        if flt.field in allowed:
            wanted = _wanted(flt)
            rows = [row for row in rows if _matches(row.get(flt.field), flt, wanted)]
    return rows


def _wanted(flt: Filter) -> list[Any]:
    """The filter's values, converted once (a bad one fails even on no rows)."""
    if flt.op in ("EMPTY", "NOT_EMPTY"):
        return []
    if not flt.values:
        raise ListError(f"Filter {flt.field} tanpa nilai")
    if flt.op in ("BETWEEN", "NOT_BETWEEN") and len(flt.values) < 2:
        raise ListError(f"{flt.op} memerlukan dua nilai")
    convert = CONVERTERS.get(flt.field, str)
    return [_convert(convert, value, flt) for value in flt.values]


def _matches(raw: Any, flt: Filter, wanted: list[Any]) -> bool:
    if flt.op in ("EMPTY", "NOT_EMPTY"):
        empty = raw is None or raw == ""
        return empty if flt.op == "EMPTY" else not empty
    if raw is None:
        return False
    value = _convert(CONVERTERS.get(flt.field, str), _text(raw), flt)
    return _compare(flt.op, value, wanted)


def _text(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def _convert(convert: Convert, text: str, flt: Filter) -> Any:
    try:
        return convert(text)
    except ValueError as error:
        raise ListError(f"Nilai filter {flt.field} tidak valid: {text}") from error


def _compare(op: str, value: Any, wanted: list[Any]) -> bool:
    first = wanted[0]
    if op in ("BETWEEN", "NOT_BETWEEN"):
        inside = first <= value <= wanted[1]
        return inside if op == "BETWEEN" else not inside
    checks: dict[str, Callable[[], bool]] = {
        "EQUAL": lambda: value in wanted,
        "NOT_EQUAL": lambda: value not in wanted,
        "GREATER_THAN": lambda: value > first,
        "GREATER_EQUAL_THAN": lambda: value >= first,
        "LESS_THAN": lambda: value < first,
        "LESS_EQUAL_THAN": lambda: value <= first,
        "CONTAIN": lambda: str(first).lower() in str(value).lower(),
    }
    return checks[op]()


def sort_rows(rows: list[Row], sort: str) -> list[Row]:
    """Apply `sp.sort=f|asc;g|desc`; the last key is applied first."""
    for part in reversed([p for p in sort.split(";") if p.strip()]):
        name, _, direction = part.partition("|")
        name = name.strip()
        descending = direction.strip().lower() == "desc"
        rows = sorted(rows, key=_sort_key(name), reverse=descending)
    return rows


def _sort_key(name: str) -> Callable[[Row], tuple[int, Any]]:
    convert = CONVERTERS.get(name, str)

    def key(row: Row) -> tuple[int, Any]:
        raw = row.get(name)
        if raw is None:
            return (0, "")
        try:
            return (1, convert(_text(raw)))
        except ValueError:
            return (1, _text(raw))

    return key


def page_of(
    rows: list[T], params: dict[str, str], default_size: int, max_size: int
) -> Page[T]:
    """Slice one page; a page past the end is empty. The size is capped
    silently (reference §5: no documented maximum)."""
    page = max(1, _int(params.get("sp.page"), 1))
    size = min(max(1, _int(params.get("sp.pageSize"), default_size)), max_size)
    start = (page - 1) * size
    sp = {
        "page": page,
        "sort": params.get("sp.sort"),
        "pageSize": size,
        "pageCount": math.ceil(len(rows) / size),
        "rowCount": len(rows),
        "start": start,
        "limit": None,
    }
    return Page(rows[start : start + size], sp)


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def requested_fields(fields_raw: str | None, literal_commas_only: bool) -> list[str]:
    """Names asked for by `fields`. With `literal_commas_only`, `%2C` does not
    separate names (reference §5: observed in production)."""
    if fields_raw is None:
        return []
    if literal_commas_only:
        return [unquote_plus(part).strip() for part in fields_raw.split(",")]
    return [part.strip() for part in unquote_plus(fields_raw).split(",")]


def select_fields(row: Row, names: list[str]) -> Row:
    """Only the requested known fields; without any, only `id`."""
    chosen = {name: row[name] for name in names if name in row}
    return chosen or {"id": row["id"]}
