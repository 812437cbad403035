"""JSON on the wire: Decimal quantities written the way Accurate writes them."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

# Accurate prints quantities with six decimals (`0.000000` in item-detail.json).
_SIX_PLACES = Decimal("0.000001")


def dumps(value: Any) -> str:
    """Serialise like json.dumps, but write a Decimal as an exact number."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def quantity(value: Decimal) -> Decimal:
    return value.quantize(_SIX_PLACES)


def _write(value: Any, parts: list[str]) -> None:
    if isinstance(value, Decimal):
        parts.append(format(value, "f"))
    elif isinstance(value, dict):
        _write_object(value, parts)
    elif isinstance(value, list | tuple):
        _write_array(value, parts)
    else:
        parts.append(json.dumps(value, ensure_ascii=False))


def _write_object(value: dict[str, Any], parts: list[str]) -> None:
    parts.append("{")
    for index, (key, item) in enumerate(value.items()):
        if index:
            parts.append(",")
        parts.append(json.dumps(str(key), ensure_ascii=False))
        parts.append(":")
        _write(item, parts)
    parts.append("}")


def _write_array(value: list[Any] | tuple[Any, ...], parts: list[str]) -> None:
    parts.append("[")
    for index, item in enumerate(value):
        if index:
            parts.append(",")
        _write(item, parts)
    parts.append("]")
