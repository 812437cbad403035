"""A seeded merchant: random but reproducible activity on both sides.

`Business.step()` does one thing a shop does: posts a document of one of the
16 kinds, edits or deletes one, changes an opening balance, or (on the
Forstok side) changes reserved stock. The same seed on the same catalogue
gives the same sequence of actions.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

from daemon.simulator.accurate import AccurateModel, Item, LineSpec
from daemon.simulator.config import Catalogue, ItemSpec
from daemon.simulator.documents import KINDS, Document, Line
from daemon.simulator.forstok import ForstokModel

# How often each kind is posted, roughly as a shop would.
_KIND_WEIGHTS = {
    "sales-invoice": 30,
    "delivery-order": 8,
    "purchase-invoice": 8,
    "receive-item": 6,
    "item-transfer": 8,
    "item-adjustment": 6,
    "sales-return": 4,
    "purchase-return": 3,
    "stock-opname-result": 3,
    "job-order": 2,
    "roll-over": 2,
    "material-adjustment": 2,
    "vendor-claim": 2,
    "customer-claim": 2,
    "material-slip": 2,
    "finished-good-slip": 2,
}
_ACTION_WEIGHTS = {"create": 70, "edit": 12, "delete": 6, "opening": 6, "reserve": 6}


class Business:
    def __init__(
        self, accurate: AccurateModel, forstok: ForstokModel, seed: int
    ) -> None:
        self.accurate = accurate
        self.forstok = forstok
        self.rng = random.Random(seed)

    def run(self, steps: int) -> list[str]:
        return [self.step() for _ in range(steps)]

    def step(self) -> str:
        """One merchant action; returns what was done, for logs and tests."""
        with self.accurate.lock:
            if not self._inventory():
                return "idle: no inventory items"
            actions: dict[str, Callable[[], str]] = {
                "create": lambda: self.create(self._weighted(_KIND_WEIGHTS)),
                "edit": self.edit,
                "delete": self.delete,
                "opening": self.change_opening,
                "reserve": self.change_reserved,
            }
            return actions[self._weighted(_ACTION_WEIGHTS)]()

    def every_kind_once(self) -> list[str]:
        """One document of every kind, plus an opening-balance change."""
        with self.accurate.lock:
            if not self._inventory():
                return []
            return [self.create(kind) for kind in KINDS] + [self.change_opening()]

    # --------------------------------------------------------------- create
    def create(self, kind: str) -> str:
        if kind == "item-transfer":
            doc = self._create_transfer()
        else:
            spec = KINDS[kind]
            doc_type = self.rng.choice(spec.types) if spec.types else None
            lines = [self._line(kind) for _ in range(self.rng.randint(1, 3))]
            doc = self.accurate.create_document(
                kind,
                lines,
                doc_type=doc_type,
                trans_date=self._trans_date(),
                approval_status=self._approval(),
            )
        return f"create {kind} {doc.number}"

    def _create_transfer(self) -> Document:
        source, target = self.rng.sample(self._warehouse_names(), 2)
        kind = KINDS["item-transfer"]
        doc_type = self.rng.choices(kind.types, weights=(8, 1, 1))[0]
        lines = [
            LineSpec(self._item().no, self._quantity(), source)
            for _ in range(self.rng.randint(1, 2))
        ]
        return self.accurate.create_document(
            "item-transfer",
            lines,
            doc_type=doc_type,
            warehouse=source,
            reference_warehouse=target,
            trans_date=self._trans_date(),
        )

    def _line(self, kind: str) -> LineSpec:
        item, warehouse = self._item(), self.rng.choice(self._warehouse_names())
        if kind == "stock-opname-result":
            counted = self.accurate.stock_of(item.no, warehouse) + self.rng.randint(
                -3, 3
            )
            return LineSpec(item.no, max(counted, Decimal(0)), warehouse)
        spec = KINDS[kind]
        line_type = self.rng.choice(spec.line_types) if spec.line_types else None
        linked = self._delivery_link() if kind == "sales-invoice" else None
        if self.rng.random() < 0.1:
            # A bigger selling unit: stock moves by quantity x ratio.
            return LineSpec(
                item.no, self.rng.randint(1, 2), warehouse, "BOX", 12, line_type
            )
        return LineSpec(
            item.no, self._quantity(), warehouse, line_type=line_type, linked_id=linked
        )

    def _delivery_link(self) -> int | None:
        """Now and then an invoice bills a delivery order (and moves nothing)."""
        deliveries = self.accurate.visible_documents("delivery-order")
        if deliveries and self.rng.random() < 0.1:
            return self.rng.choice(deliveries).id
        return None

    # ----------------------------------------------------------- edit, delete
    def edit(self) -> str:
        doc = self._existing()
        if doc is None:
            return self.create("sales-invoice")
        change = self.rng.choice(("quantity", "item", "warehouse", "approval"))
        if change == "warehouse" and doc.kind == "item-transfer":
            self._reroute(doc)
            return f"edit {doc.kind} {doc.number} (warehouses)"
        lines = [self._spec_of(doc, line) for line in doc.lines]
        index = self.rng.randrange(len(lines))
        approval = None
        if change == "quantity":
            lines[index] = replace(lines[index], quantity=self._quantity())
        elif change == "item":
            lines[index] = replace(lines[index], item=self._item().no)
        elif change == "warehouse":
            warehouse = self.rng.choice(self._warehouse_names())
            lines[index] = replace(lines[index], warehouse=warehouse)
        else:
            approval = "APPROVED" if doc.approval_status != "APPROVED" else "UNAPPROVED"
        self.accurate.edit_document(
            doc.kind, doc.id, lines=lines, approval_status=approval
        )
        return f"edit {doc.kind} {doc.number} ({change})"

    def _reroute(self, doc: Document) -> None:
        """Send a transfer between two other warehouses."""
        source, target = self.rng.sample(self._warehouse_names(), 2)
        lines = [replace(self._spec_of(doc, ln), warehouse=None) for ln in doc.lines]
        self.accurate.edit_document(
            doc.kind, doc.id, lines=lines, warehouse=source, reference_warehouse=target
        )

    def delete(self) -> str:
        kind = "sales-invoice" if self.rng.random() < 0.7 else None
        doc = self._existing(kind)
        if doc is None:
            return self.create("sales-invoice")
        self.accurate.delete_document(doc.kind, doc.id)
        return f"delete {doc.kind} {doc.number}"

    def _existing(self, kind: str | None = None) -> Document | None:
        kinds = [kind] if kind else [k for k in KINDS if self.accurate.documents[k]]
        docs = [d for k in kinds for d in self.accurate.visible_documents(k)]
        return self.rng.choice(docs) if docs else None

    def _spec_of(self, doc: Document, line: Line) -> LineSpec:
        return LineSpec(
            item=self.accurate.items[line.item_id].no,
            quantity=line.quantity,
            warehouse=self.accurate.warehouses[line.warehouse_id].name,
            unit=line.unit_name,
            unit_ratio=line.unit_ratio,
            line_type=line.line_type,
            linked_id=line.linked_id,
        )

    # ------------------------------------------------------- other actions
    def change_opening(self) -> str:
        item, warehouse = self._item(), self.rng.choice(self._warehouse_names())
        quantity = self.rng.randint(0, 100)
        self.accurate.set_opening_balance(item.no, warehouse, quantity)
        return f"opening {item.no}@{warehouse} = {quantity}"

    def change_reserved(self) -> str:
        positions = sorted(self.forstok.positions)
        if not positions:
            return self.create("sales-invoice")
        sku, warehouse_id = self.rng.choice(positions)
        reserved = self.rng.randint(0, 3)
        self.forstok.set_reserved(sku, warehouse_id, reserved)
        return f"reserve {sku}@{warehouse_id} = {reserved}"

    # -------------------------------------------------------------- helpers
    def _weighted(self, weights: dict[str, int]) -> str:
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]

    def _inventory(self) -> list[Item]:
        return [i for i in self.accurate.items.values() if i.item_type == "INVENTORY"]

    def _item(self) -> Item:
        return self.rng.choice(self._inventory())

    def _warehouse_names(self) -> list[str]:
        return [w.name for w in self.accurate.warehouses.values() if not w.system]

    def _quantity(self) -> Decimal:
        if self.rng.random() < 0.1:
            return Decimal(self.rng.choice(("0.5", "1.25", "2.75")))
        return Decimal(self.rng.randint(1, 5))

    def _trans_date(self) -> date | None:
        if self.rng.random() < 0.05:  # back-dated paperwork
            return self.accurate.now_stamp().date() - timedelta(self.rng.randint(1, 10))
        return None

    def _approval(self) -> str:
        return "APPROVED" if self.rng.random() < 0.95 else "UNAPPROVED"


def starter_catalogue(
    seed: int = 0,
    items: int = 20,
    warehouses: tuple[str, ...] = ("GDG-1", "GDG-2", "GDG-3"),
    *,
    services: int = 2,
    quirks: bool = False,
) -> Catalogue:
    """Items `SKU-0001`…, some SERVICE, opening stock in the first two
    warehouses, and a Forstok catalogue carrying every inventory SKU.

    With `quirks`, the first items get the spacing and case differences of
    cases C12 and C13 (Forstok keeps the clean SKU), and the first SKU sits on
    two Forstok items (C14).
    """
    rng = random.Random(seed)
    specs = [_starter_item(rng, n, warehouses) for n in range(1, items + 1)]
    skus = [spec.no for spec in specs]
    if quirks:
        for index, (accurate_no, sku) in enumerate(_quirks(skus)):
            specs[index].no, skus[index] = accurate_no, sku
    products = {sku: [7000 + n] for n, sku in enumerate(skus)}
    if quirks and skus:
        products[skus[0]].append(8000)
    specs += [
        ItemSpec(f"JASA-{n:02d}", f"Jasa {n}", item_type="SERVICE")
        for n in range(1, services + 1)
    ]
    return Catalogue(
        warehouses=warehouses,
        items=specs,
        forstok_warehouses={f"WH-{n}": n for n in range(1, len(warehouses) + 1)},
        forstok_products=products,
    )


def _starter_item(rng: random.Random, n: int, warehouses: tuple[str, ...]) -> ItemSpec:
    opening = {name: Decimal(rng.randint(0, 40)) for name in warehouses[:2]}
    return ItemSpec(f"SKU-{n:04d}", f"Barang {n}", opening=opening)


def _quirks(clean: list[str]) -> list[tuple[str, str]]:
    """(Accurate item no, Forstok SKU) pairs typed the way people type them."""
    variants: list[Callable[[str], tuple[str, str]]] = [
        lambda no: (no + " ", no),  # trailing space
        lambda no: (no.replace("-", "  "), no.replace("-", " ")),  # doubled space
        lambda no: (no + "\u00a0", no),  # non-breaking space
        lambda no: (no.lower(), no),  # case
    ]
    return [variant(no) for variant, no in zip(variants, clean, strict=False)]
