"""The 16 stock-affecting document kinds (reference §7) and their effects.

Kind 1, the opening balance, lives on the item and is handled by the model.
How each kind moves stock is domain knowledge the simulator applies and the
daemon never computes (it re-reads absolute stock), so a mistake here shows
up as a mismatch rather than hiding behind a shared table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

IN, OUT = 1, -1

# An effect: (item id, warehouse id, change in base units).
Effect = tuple[int, int, Decimal]


@dataclass(frozen=True)
class Kind:
    path: str  # the module path under /accurate/api/
    prefix: str  # document number prefix
    direction: int  # IN, OUT, or 0 when the type decides
    type_field: str | None = None  # header field naming the document's type
    types: tuple[str, ...] = ()  # its values; the first is the default
    line_type_field: str | None = None
    line_types: tuple[str, ...] = ()
    link_field: str | None = None  # a line linked this way moves no stock


# Type values marked [A] in the reference's open question 8 are the
# simulator's guesses; only the ones with a stock meaning matter.
KINDS: dict[str, Kind] = {
    k.path: k
    for k in (
        Kind("delivery-order", "DO", OUT),
        Kind("sales-invoice", "SI", OUT, link_field="deliveryOrderId"),
        Kind("sales-return", "SR", IN, "returnType", ("INVOICE", "DELIVERY")),
        Kind("receive-item", "RI", IN),
        Kind("purchase-invoice", "PI", IN, link_field="receiveItemId"),
        Kind("purchase-return", "PR", OUT, "returnType", ("INVOICE", "RECEIVE")),
        Kind("job-order", "JO", OUT),
        Kind("roll-over", "RO", IN, "rollOverType", ("JOB_ORDER",)),
        Kind("material-adjustment", "MA", OUT),
        Kind(
            "item-adjustment",
            "IA",
            0,
            line_type_field="itemAdjustmentType",
            line_types=("ADJUSTMENT_IN", "ADJUSTMENT_OUT"),
        ),
        Kind(
            "item-transfer",
            "IT",
            0,
            "itemTransferType",
            ("TRANSFER", "TRANSFER_OUT", "TRANSFER_IN"),
        ),
        Kind("stock-opname-result", "SOR", 0),
        Kind(
            "vendor-claim",
            "VC",
            0,
            "vendorClaimType",
            ("VENDOR_CLAIM_OUT", "VENDOR_CLAIM_IN"),
        ),
        Kind(
            "customer-claim",
            "CC",
            0,
            "customerClaimType",
            ("CUSTOMER_CLAIM_IN", "CUSTOMER_CLAIM_OUT"),
        ),
        Kind("material-slip", "MS", OUT),
        Kind("finished-good-slip", "FGS", IN),
    )
}


@dataclass
class Line:
    id: int
    item_id: int
    quantity: Decimal
    unit_name: str
    unit_ratio: Decimal
    warehouse_id: int
    line_type: str | None = None  # itemAdjustmentType
    linked_id: int | None = None  # deliveryOrderId / receiveItemId

    @property
    def base_quantity(self) -> Decimal:
        return self.quantity * self.unit_ratio


@dataclass
class Document:
    kind: str
    id: int
    number: str
    trans_date: date
    last_update: datetime  # naive wall clock in the configured zone
    opt_lock: int
    approval_status: str
    lines: list[Line]
    visible_at: datetime  # business-clock time it is committed
    doc_type: str | None = None  # the kind's type_field value
    warehouse_id: int | None = None  # item-transfer: from
    reference_warehouse_id: int | None = None  # item-transfer: to
    committed: bool = False  # listed, and its effect applied
    applied: list[Effect] = field(default_factory=list)  # in stock right now


@dataclass(frozen=True)
class StockView:
    """What an effect calculation may ask of the model."""

    on_hand: Callable[[int, int], Decimal]
    moves_stock: Callable[[int], bool]  # False for SERVICE items
    transit_id: int
    only_approved: bool


def effects(doc: Document, view: StockView) -> list[Effect]:
    """The stock changes `doc` causes when it is applied now."""
    if view.only_approved and doc.approval_status != "APPROVED":
        return []
    lines = [ln for ln in doc.lines if view.moves_stock(ln.item_id)]
    kind = KINDS[doc.kind]
    if doc.kind == "item-transfer":
        return _transfer(doc, lines, view.transit_id)
    if doc.kind == "stock-opname-result":
        return _opname(lines, view.on_hand)
    if doc.kind == "vendor-claim":
        return _vendor_claim(doc, lines, view.transit_id)
    result: list[Effect] = []
    for line in lines:
        if kind.link_field and line.linked_id is not None:
            continue  # the linked delivery or receipt already moved it
        sign = _line_sign(kind, doc, line)
        result.append((line.item_id, line.warehouse_id, sign * line.base_quantity))
    return result


def _line_sign(kind: Kind, doc: Document, line: Line) -> int:
    if kind.direction:
        return kind.direction
    if kind.line_type_field:
        return IN if line.line_type == "ADJUSTMENT_IN" else OUT
    return IN if doc.doc_type == "CUSTOMER_CLAIM_IN" else OUT


def _transfer(doc: Document, lines: list[Line], transit_id: int) -> list[Effect]:
    # A two-step transfer passes through the system Transit warehouse
    # (item-detail.json describes it as holding goods being moved).
    source, target = doc.warehouse_id, doc.reference_warehouse_id
    if doc.doc_type == "TRANSFER_OUT":
        target = transit_id
    elif doc.doc_type == "TRANSFER_IN":
        source = transit_id
    if source is None or target is None:
        raise ValueError(f"transfer {doc.number} has no warehouses")
    result: list[Effect] = []
    for line in lines:
        result.append((line.item_id, source, -line.base_quantity))
        result.append((line.item_id, target, line.base_quantity))
    return result


def _vendor_claim(doc: Document, lines: list[Line], transit_id: int) -> list[Effect]:
    # Goods claimed back to a vendor wait in Transit (item-detail.json's
    # description of that warehouse names vendor claims).
    sign = OUT if doc.doc_type != "VENDOR_CLAIM_IN" else IN
    result: list[Effect] = []
    for line in lines:
        moved = sign * line.base_quantity
        result.append((line.item_id, line.warehouse_id, moved))
        result.append((line.item_id, transit_id, -moved))
    return result


def _opname(lines: list[Line], on_hand: Callable[[int, int], Decimal]) -> list[Effect]:
    """A count sets stock to the counted figure: the effect is the difference."""
    pending: dict[tuple[int, int], Decimal] = {}
    result: list[Effect] = []
    for line in lines:
        key = (line.item_id, line.warehouse_id)
        current = on_hand(*key) + pending.get(key, Decimal(0))
        delta = line.base_quantity - current
        pending[key] = pending.get(key, Decimal(0)) + delta
        result.append((line.item_id, line.warehouse_id, delta))
    return result
