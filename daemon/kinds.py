"""The seventeen kinds of Accurate documents that change stock.

Each kind says where its list lives, how its changes are found, and which
(item, warehouse) pairs a document touches. A document never tells us a
quantity to push: it only names pairs whose absolute stock we must re-read.
Reading more pairs than needed is harmless, so when a line does not say its
warehouse, every warehouse of that item is re-read rather than guessing one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

ALL_WAREHOUSES = 0
"""Warehouse id meaning "every warehouse of this item"."""

Pair = tuple[int, int]
"""(Accurate item id, Accurate warehouse id or ALL_WAREHOUSES)."""


class ChangeFeed(Enum):
    """How a kind's changes are found."""

    LAST_UPDATE = "last_update"
    """`list.do` filtered by `lastUpdate >= cursor - lookback`."""

    TRANS_DATE = "trans_date"
    """No `lastUpdate` filter: list a recent `transDate` window and diff it
    against the (id, optLock) pairs seen before. A document back-dated past
    the window, or edited after its date left the window, is missed here; the
    scheduled full sync re-reads every warehouse's stock and covers it."""

    ITEM = "item"
    """Opening balances live on the item: the item list's `lastUpdate`."""


class MalformedDocument(ValueError):
    """A document detail lacks what we need to know which pairs it touches."""

    def __init__(self, kind: str, document: object, field: str) -> None:
        self.kind = kind
        self.document = document
        self.field = field
        super().__init__(f"{kind} document {document}: missing or invalid {field}")


@dataclass(frozen=True)
class DocumentKind:
    name: str
    module: str
    indonesian: str
    feed: ChangeFeed
    touched: Callable[[str, Mapping[str, Any]], set[Pair]]

    def pairs(self, detail: Mapping[str, Any]) -> set[Pair]:
        return self.touched(self.name, detail)


def _id(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    return None


def _nested_id(record: Mapping[str, Any], flat: str, nested: str) -> int | None:
    found = _id(record.get(flat))
    if found is None and isinstance(record.get(nested), Mapping):
        found = _id(record[nested].get("id"))
    return found


def _lines(kind: str, detail: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    lines = detail.get("detailItem")
    if not isinstance(lines, list) or not all(isinstance(x, Mapping) for x in lines):
        raise MalformedDocument(
            kind, detail.get("number", detail.get("id")), "detailItem"
        )
    return lines


def _line_item(kind: str, detail: Mapping[str, Any], line: Mapping[str, Any]) -> int:
    item = _nested_id(line, "itemId", "item")
    if item is None:
        raise MalformedDocument(
            kind, detail.get("number", detail.get("id")), "detailItem[].item.id"
        )
    return item


def standard_lines(kind: str, detail: Mapping[str, Any]) -> set[Pair]:
    """Lines of the common shape: each names its item and its warehouse."""
    pairs = set()
    for line in _lines(kind, detail):
        item = _line_item(kind, detail, line)
        warehouse = _nested_id(line, "warehouseId", "warehouse")
        pairs.add((item, warehouse or ALL_WAREHOUSES))
    return pairs


def transfer_lines(kind: str, detail: Mapping[str, Any]) -> set[Pair]:
    """A transfer moves stock out of one warehouse and into another: both."""
    ends = [
        _nested_id(detail, "warehouseId", "warehouse"),
        _nested_id(detail, "referenceWarehouseId", "referenceWarehouse"),
    ]
    pairs = set()
    for line in _lines(kind, detail):
        item = _line_item(kind, detail, line)
        line_ends = {*ends, _nested_id(line, "warehouseId", "warehouse")}
        if None in ends:
            pairs.add((item, ALL_WAREHOUSES))
        pairs |= {(item, end) for end in line_ends if end is not None}
    return pairs


def opening_balance(kind: str, detail: Mapping[str, Any]) -> set[Pair]:
    """An item's opening balance can sit in any warehouse: re-read them all."""
    item = _id(detail.get("id"))
    if item is None:
        raise MalformedDocument(kind, detail.get("no"), "id")
    return {(item, ALL_WAREHOUSES)}


def _kind(
    name: str,
    module: str,
    indonesian: str,
    feed: ChangeFeed = ChangeFeed.LAST_UPDATE,
    touched: Callable[[str, Mapping[str, Any]], set[Pair]] = standard_lines,
) -> DocumentKind:
    return DocumentKind(name, module, indonesian, feed, touched)


KINDS: tuple[DocumentKind, ...] = (
    _kind(
        "opening_balance", "item", "Stok Awal Barang", ChangeFeed.ITEM, opening_balance
    ),
    _kind("delivery_order", "delivery-order", "Pengiriman Pesanan"),
    _kind("sales_invoice", "sales-invoice", "Faktur Penjualan"),
    _kind("sales_return", "sales-return", "Retur Penjualan"),
    _kind("receive_item", "receive-item", "Penerimaan Barang"),
    _kind("purchase_invoice", "purchase-invoice", "Faktur Pembelian"),
    _kind("purchase_return", "purchase-return", "Retur Pembelian"),
    _kind("job_order", "job-order", "Pekerjaan Pesanan"),
    _kind("roll_over", "roll-over", "Penyelesaian Pesanan"),
    _kind("material_adjustment", "material-adjustment", "Penambahan Bahan Baku"),
    _kind("item_adjustment", "item-adjustment", "Penyesuaian Persediaan"),
    _kind(
        "item_transfer",
        "item-transfer",
        "Pemindahan Barang",
        touched=transfer_lines,
    ),
    _kind("stock_opname_result", "stock-opname-result", "Hasil Stok Opname"),
    _kind("vendor_claim", "vendor-claim", "Klaim Pemasok", ChangeFeed.TRANS_DATE),
    _kind("customer_claim", "customer-claim", "Klaim Pelanggan"),
    _kind(
        "material_slip",
        "material-slip",
        "Pengambilan Bahan Baku",
        ChangeFeed.TRANS_DATE,
    ),
    _kind(
        "finished_good_slip",
        "finished-good-slip",
        "Penyelesaian Barang Jadi",
        ChangeFeed.TRANS_DATE,
    ),
)

KINDS_BY_NAME = {kind.name: kind for kind in KINDS}
DOCUMENT_KINDS = tuple(k for k in KINDS if k.feed is not ChangeFeed.ITEM)
