"""The simulated Accurate database: warehouses, items, documents and stock.

Every mutation goes through this class under the simulator's lock, so tests
in another thread and the HTTP handlers see one consistent database. Stock
is kept per (item id, warehouse id) as a Decimal; it may go negative or
fractional, as it can in Accurate.
"""

from __future__ import annotations

import itertools
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from daemon.simulator import wire
from daemon.simulator.clock import (
    format_date,
    format_last_update,
    parse_date,
    parse_last_update,
    wall_clock,
)
from daemon.simulator.config import ItemSpec, SimConfig
from daemon.simulator.documents import (
    KINDS,
    Document,
    Effect,
    Line,
    StockView,
    effects,
)

TRANSIT_WAREHOUSE = "Transit (AOL System)"
_TRANSIT_DESCRIPTION = "Barang dalam perjalanan pindah barang atau klaim ke pemasok"

Number = Decimal | int | str | float


class NotFoundError(KeyError):
    """An item, warehouse or document the caller named does not exist."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Warehouse:
    id: int
    name: str
    last_update: datetime
    suspended: bool = False
    default: bool = False
    scrap: bool = False
    system: bool = False
    opt_lock: int = 0


@dataclass
class OpeningBalance:
    id: int
    warehouse_id: int
    quantity: Decimal
    as_of: date


@dataclass
class Item:
    id: int
    no: str
    name: str
    item_type: str
    unit: str
    last_update: datetime
    suspended: bool = False
    upc_no: str | None = None
    opt_lock: int = 0
    opening: list[OpeningBalance] = field(default_factory=list)
    applied: list[Effect] = field(default_factory=list)  # opening effect in stock


@dataclass(frozen=True)
class LineSpec:
    """A document line as a test or the business generator describes it."""

    item: str  # item no
    quantity: Number
    warehouse: str | None = None  # required except on item transfers
    unit: str | None = None  # defaults to the item's unit1
    unit_ratio: Number = 1
    line_type: str | None = None  # itemAdjustmentType
    linked_id: int | None = None  # deliveryOrderId / receiveItemId


@dataclass
class AccurateStats:
    token_grants: int = 0
    token_refreshes: int = 0
    open_db_calls: int = 0
    session_refreshes: int = 0


class AccurateModel:
    def __init__(self, config: SimConfig, lock: threading.RLock) -> None:
        self.config = config
        self.lock = lock
        self.warehouses: dict[int, Warehouse] = {}
        self.items: dict[int, Item] = {}
        self.documents: dict[str, dict[int, Document]] = {k: {} for k in KINDS}
        self.stock: dict[tuple[int, int], Decimal] = {}
        self.touched: set[tuple[int, int]] = set()  # pairs that ever moved
        # Bumped on every stock change, so a rendered balance can be reused.
        self.stock_generation = 0
        self._by_no: dict[str, Item] = {}  # a lookup index, kept by rename_item
        # Called under the lock right after a document's stock effect is
        # applied (the benchmark times delivery from this moment).
        self.commit_listeners: list[Callable[[Document], None]] = []
        self.current_host = 0  # index into the data hosts
        self.stats = AccurateStats()
        self._pending: list[Document] = []  # created, not yet committed
        self._ids: dict[str, itertools.count[int]] = {}
        self.transit_id = self._add_transit()

    # ----------------------------------------------------------------- time
    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.accurate.zone)  # read each time: a switch

    def now_stamp(self) -> datetime:
        return wall_clock(self.config.clock.now(), self.zone)

    def _stamp(self, last_update: str | datetime | None) -> datetime:
        if last_update is None:
            return self.now_stamp()
        if isinstance(last_update, datetime):
            return last_update.replace(microsecond=0)
        return parse_last_update(last_update)

    def _next_id(self, table: str, start: int = 100) -> int:
        # Each table numbers its own rows, as Accurate does: a sales invoice
        # and a delivery order may share an id.
        return next(self._ids.setdefault(table, itertools.count(start)))

    # ------------------------------------------------------------ catalogue
    def _add_transit(self) -> int:
        transit = self.add_warehouse(TRANSIT_WAREHOUSE)
        transit.system = True
        return transit.id

    def add_warehouse(
        self,
        name: str,
        *,
        suspended: bool = False,
        default: bool = False,
        scrap: bool = False,
    ) -> Warehouse:
        with self.lock:
            if any(w.name == name for w in self.warehouses.values()):
                raise ValueError(f"warehouse {name!r} exists")
            warehouse = Warehouse(
                id=self._next_id("warehouse", 50),
                name=name,
                last_update=self.now_stamp(),
                suspended=suspended,
                default=default,
                scrap=scrap,
            )
            self.warehouses[warehouse.id] = warehouse
            return warehouse

    def add_item(
        self,
        no: str,
        name: str | None = None,
        *,
        item_type: str = "INVENTORY",
        unit: str = "PCS",
        suspended: bool = False,
        upc_no: str | None = None,
        last_update: str | datetime | None = None,
    ) -> Item:
        with self.lock:
            if no in self._by_no:
                raise ValueError(f"item {no!r} exists")
            item = Item(
                id=self._next_id("item", 2100),
                no=no,
                name=name or f"Barang {no.strip()}",
                item_type=item_type,
                unit=unit,
                last_update=self._stamp(last_update),
                suspended=suspended,
                upc_no=upc_no,
            )
            self.items[item.id] = item
            self._by_no[no] = item
            return item

    def load_catalogue(self, names: Iterable[str], items: Iterable[ItemSpec]) -> None:
        for index, name in enumerate(names):
            self.add_warehouse(name, default=index == 0)
        for spec in items:
            self.add_item(
                spec.no,
                spec.name,
                item_type=spec.item_type,
                unit=spec.unit,
                suspended=spec.suspended,
                upc_no=spec.upc_no,
            )
            for warehouse, quantity in spec.opening.items():
                self.set_opening_balance(spec.no, warehouse, quantity)

    def set_warehouse(
        self,
        name: str,
        *,
        suspended: bool,
        last_update: str | datetime | None = None,
    ) -> Warehouse:
        """Suspend or revive a warehouse (bumps optLock and lastUpdate)."""
        with self.lock:
            warehouse = self.warehouse_by_name(name)
            warehouse.suspended = suspended
            warehouse.opt_lock += 1
            warehouse.last_update = self._stamp(last_update)
            return warehouse

    def item_by_no(self, no: str) -> Item:
        indexed = self._by_no.get(no)
        if indexed is not None and indexed.no == no:
            return indexed
        for item in self.items.values():
            if item.no == no:
                return item
        raise NotFoundError(f"no item numbered {no!r}")

    def warehouse_by_name(self, name: str) -> Warehouse:
        for warehouse in self.warehouses.values():
            if warehouse.name == name:
                return warehouse
        raise NotFoundError(f"no warehouse named {name!r}")

    def set_item(
        self,
        no: str,
        *,
        suspended: bool | None = None,
        name: str | None = None,
        last_update: str | datetime | None = None,
    ) -> Item:
        """Change an item's master data (bumps optLock and lastUpdate)."""
        with self.lock:
            item = self.item_by_no(no)
            if suspended is not None:
                item.suspended = suspended
            if name is not None:
                item.name = name
            self._touch_item(item, last_update)
            return item

    def rename_item(
        self, no: str, new_no: str, *, last_update: str | datetime | None = None
    ) -> Item:
        """Give an item another number, as Accurate's item form allows: its
        id, stock and documents stay (bumps optLock and lastUpdate)."""
        with self.lock:
            if new_no in self._by_no:
                raise ValueError(f"item {new_no!r} exists")
            item = self.item_by_no(no)
            del self._by_no[no]
            item.no = new_no
            self._by_no[new_no] = item
            self._touch_item(item, last_update)
            return item

    def delete_item(self, no: str) -> None:
        """Delete an item. Accurate refuses while transactions use it, so the
        item may hold nothing but its opening balance, which goes with it."""
        with self.lock:
            item = self.item_by_no(no)
            self._reverse(item.applied)
            left = [k for k, q in self.stock.items() if k[0] == item.id and q]
            if left:
                self._apply(item.applied)
                raise ValueError(f"item {no!r} has transactions")
            for key in [k for k in self.stock if k[0] == item.id]:
                del self.stock[key]
            del self.items[item.id]
            del self._by_no[no]

    def _touch_item(self, item: Item, last_update: str | datetime | None) -> None:
        item.opt_lock += 1
        item.last_update = self._stamp(last_update)

    # ------------------------------------------------- kind 1: opening balance
    def set_opening_balance(
        self,
        item_no: str,
        warehouse: str,
        quantity: Number,
        *,
        as_of: date | None = None,
        last_update: str | datetime | None = None,
    ) -> Item:
        """Set the item's opening balance in one warehouse (0 removes it)."""
        with self.lock:
            item = self.item_by_no(item_no)
            target = self.warehouse_by_name(warehouse)
            kept = [ob for ob in item.opening if ob.warehouse_id != target.id]
            amount = Decimal(str(quantity))
            if amount:
                day = as_of or self.now_stamp().date()
                entry = OpeningBalance(self._next_id("opening"), target.id, amount, day)
                kept.append(entry)
            item.opening = kept
            self._reverse(item.applied)
            item.applied = self._opening_effects(item)
            self._apply(item.applied)
            self._touch_item(item, last_update)
            return item

    def _opening_effects(self, item: Item) -> list[Effect]:
        if item.item_type != "INVENTORY":
            return []
        return [(item.id, ob.warehouse_id, ob.quantity) for ob in item.opening]

    # ------------------------------------------------------------ documents
    def create_document(
        self,
        kind: str,
        lines: Sequence[LineSpec],
        *,
        number: str | None = None,
        trans_date: date | str | None = None,
        last_update: str | datetime | None = None,
        approval_status: str = "APPROVED",
        doc_type: str | None = None,
        warehouse: str | None = None,
        reference_warehouse: str | None = None,
        visible_in_s: float | None = None,
    ) -> Document:
        """Record a document and apply its stock effect once it is visible."""
        with self.lock:
            spec = KINDS[kind]
            stamp = self._stamp(last_update)
            day = self._trans_date(trans_date, stamp)
            doc_id = self._next_id(kind)
            delay = self.config.accurate.late_commit_s
            if visible_in_s is not None:
                delay = visible_in_s
            doc = Document(
                kind=kind,
                id=doc_id,
                number=number or f"{spec.prefix}.{day:%Y.%m}.{doc_id:05d}",
                trans_date=day,
                last_update=stamp,
                opt_lock=0,
                approval_status=approval_status,
                lines=[],
                doc_type=doc_type or (spec.types[0] if spec.types else None),
                visible_at=self.config.clock.now() + timedelta(seconds=delay),
            )
            self._set_warehouses(doc, warehouse, reference_warehouse)
            doc.lines = self._lines(doc, lines)
            self.documents[kind][doc.id] = doc
            self._pending.append(doc)
            self.commit_due()
            return doc

    def edit_document(
        self,
        kind: str,
        doc_id: int,
        *,
        lines: Sequence[LineSpec] | None = None,
        trans_date: date | str | None = None,
        last_update: str | datetime | None = None,
        approval_status: str | None = None,
        doc_type: str | None = None,
        warehouse: str | None = None,
        reference_warehouse: str | None = None,
    ) -> Document:
        """Change a document: its old effect is reversed, the new one applied."""
        with self.lock:
            doc = self.document(kind, doc_id)
            self._reverse(doc.applied)
            doc.applied = []
            if trans_date is not None:
                doc.trans_date = self._trans_date(trans_date, doc.last_update)
            if approval_status is not None:
                doc.approval_status = approval_status
            if doc_type is not None:
                doc.doc_type = doc_type
            if warehouse is not None or reference_warehouse is not None:
                self._set_warehouses(doc, warehouse, reference_warehouse)
            if lines is not None:
                doc.lines = self._lines(doc, lines)
            doc.opt_lock += 1
            doc.last_update = self._stamp(last_update)
            if doc.committed:  # a pending one gets its effect on commit
                self._apply_effects(doc)
            return doc

    def delete_document(self, kind: str, doc_id: int) -> Document:
        """Hard delete: the effect is reversed and the document is gone."""
        with self.lock:
            doc = self.document(kind, doc_id)
            self._reverse(doc.applied)
            doc.applied = []
            del self.documents[kind][doc_id]
            if doc in self._pending:
                self._pending.remove(doc)
            return doc

    def adjust_stock_to(
        self,
        item_no: str,
        warehouse: str,
        quantity: Number,
        *,
        last_update: str | datetime | None = None,
    ) -> Document | None:
        """Post an item adjustment that brings one pair to `quantity`."""
        with self.lock:
            difference = Decimal(str(quantity)) - self.stock_of(item_no, warehouse)
            if not difference:
                return None
            direction = "ADJUSTMENT_IN" if difference > 0 else "ADJUSTMENT_OUT"
            line = LineSpec(item_no, abs(difference), warehouse, line_type=direction)
            return self.create_document(
                "item-adjustment", [line], last_update=last_update
            )

    def document(self, kind: str, doc_id: int) -> Document:
        if kind not in KINDS:
            raise NotFoundError(f"unknown document kind {kind!r}")
        found = self.documents[kind].get(doc_id)
        if found is None:
            raise NotFoundError(f"no {kind} with id {doc_id}")
        return found

    def visible_documents(self, kind: str) -> list[Document]:
        """Committed documents of one kind (late commits stay hidden)."""
        with self.lock:
            self.commit_due()
            return [d for d in self.documents[kind].values() if d.committed]

    def commit_due(self) -> None:
        """Commit documents whose (late) commit time has come: from now on
        they are listed and their stock effect is applied."""
        with self.lock:
            now = self.config.clock.now()
            due = [d for d in self._pending if d.visible_at <= now]
            for doc in due:
                self._pending.remove(doc)
                doc.committed = True
                self._apply_effects(doc)
                for listener in self.commit_listeners:
                    listener(doc)

    def _apply_effects(self, doc: Document) -> None:
        doc.applied = effects(doc, self._view())
        self._apply(doc.applied)

    def _trans_date(self, value: date | str | None, stamp: datetime) -> date:
        if value is None:
            return stamp.date()
        if isinstance(value, str):
            return parse_date(value)
        return value

    def _set_warehouses(
        self, doc: Document, source: str | None, target: str | None
    ) -> None:
        if doc.kind != "item-transfer":
            return
        if source is not None:
            doc.warehouse_id = self.warehouse_by_name(source).id
        if target is not None:
            doc.reference_warehouse_id = self.warehouse_by_name(target).id
        if doc.warehouse_id is None or doc.reference_warehouse_id is None:
            raise ValueError("an item transfer needs warehouse and referenceWarehouse")

    def _lines(self, doc: Document, specs: Sequence[LineSpec]) -> list[Line]:
        return [self._line(doc, spec) for spec in specs]

    def _line(self, doc: Document, spec: LineSpec) -> Line:
        item = self.item_by_no(spec.item)
        if spec.warehouse is not None:
            warehouse_id = self.warehouse_by_name(spec.warehouse).id
        elif doc.kind == "item-transfer" and doc.warehouse_id is not None:
            warehouse_id = doc.warehouse_id
        else:
            raise ValueError(f"line for {spec.item!r} needs a warehouse")
        line_type = spec.line_type
        if KINDS[doc.kind].line_type_field and line_type is None:
            line_type = KINDS[doc.kind].line_types[0]
        return Line(
            id=self._next_id("line", 5000),
            item_id=item.id,
            quantity=Decimal(str(spec.quantity)),
            unit_name=spec.unit or item.unit,
            unit_ratio=Decimal(str(spec.unit_ratio)),
            warehouse_id=warehouse_id,
            line_type=line_type,
            linked_id=spec.linked_id,
        )

    # ---------------------------------------------------------------- stock
    def _view(self) -> StockView:
        return StockView(
            on_hand=lambda item_id, wh_id: self.stock.get((item_id, wh_id), Decimal(0)),
            moves_stock=lambda item_id: self.items[item_id].item_type == "INVENTORY",
            transit_id=self.transit_id,
            only_approved=self.config.accurate.only_approved_moves_stock,
        )

    def _apply(self, changes: Iterable[Effect]) -> None:
        for item_id, warehouse_id, delta in changes:
            key = (item_id, warehouse_id)
            self.stock[key] = self.stock.get(key, Decimal(0)) + delta
            self.touched.add(key)
            self.stock_generation += 1

    def _reverse(self, changes: Iterable[Effect]) -> None:
        self._apply((i, w, -delta) for i, w, delta in changes)

    def stock_of(self, item_no: str, warehouse: str) -> Decimal:
        with self.lock:
            self.commit_due()
            key = (self.item_by_no(item_no).id, self.warehouse_by_name(warehouse).id)
            return self.stock.get(key, Decimal(0))

    def stock_snapshot(self) -> dict[tuple[str, str], Decimal]:
        """On-hand per (item no, warehouse name), every inventory item and
        every non-system warehouse, zero included."""
        with self.lock:
            self.commit_due()
            return {
                (item.no, wh.name): self.stock.get((item.id, wh.id), Decimal(0))
                for item in self.items.values()
                if item.item_type == "INVENTORY"
                for wh in self.warehouses.values()
                if not wh.system
            }

    def item_total(self, item: Item) -> Decimal:
        return sum(
            (self.stock.get((item.id, wh_id), Decimal(0)) for wh_id in self.warehouses),
            Decimal(0),
        )

    # -------------------------------------------------------------- rendering
    def render_document(self, doc: Document, *, lines: bool = True) -> dict[str, Any]:
        """The document as detail.do shows it; list.do rows have no lines."""
        spec = KINDS[doc.kind]
        row: dict[str, Any] = {
            "id": doc.id,
            "number": doc.number,
            "transDate": format_date(doc.trans_date),
            "lastUpdate": format_last_update(doc.last_update),
            "optLock": doc.opt_lock,
            "approvalStatus": doc.approval_status,
        }
        if spec.type_field:
            row[spec.type_field] = doc.doc_type
        if doc.kind == "item-transfer":
            row.update(self._transfer_header(doc))
        if lines:
            row["detailItem"] = [self._render_line(doc, ln) for ln in doc.lines]
        return row

    def _transfer_header(self, doc: Document) -> dict[str, Any]:
        source, target = doc.warehouse_id, doc.reference_warehouse_id
        if source is None or target is None:
            raise ValueError(f"transfer {doc.number} has no warehouses")
        return {
            "warehouseId": source,
            "warehouse": self._warehouse_ref(source),
            "referenceWarehouseId": target,
            "referenceWarehouse": self._warehouse_ref(target),
        }

    def _render_line(self, doc: Document, line: Line) -> dict[str, Any]:
        spec = KINDS[doc.kind]
        item = self.items[line.item_id]
        row: dict[str, Any] = {
            "id": line.id,
            "item": {"id": item.id, "no": item.no, "name": item.name},
            "itemId": item.id,
            "quantity": wire.quantity(line.quantity),
            "itemUnit": {"name": line.unit_name},
            "unitRatio": wire.quantity(line.unit_ratio),
            "warehouseId": line.warehouse_id,
            "warehouse": self._warehouse_ref(line.warehouse_id),
        }
        if spec.line_type_field:
            row[spec.line_type_field] = line.line_type
        if spec.link_field:
            row[spec.link_field] = line.linked_id
        return row

    def _warehouse_ref(self, warehouse_id: int) -> dict[str, Any]:
        return {"id": warehouse_id, "name": self.warehouses[warehouse_id].name}

    def render_warehouse(self, wh: Warehouse) -> dict[str, Any]:
        return {
            "id": wh.id,
            "name": wh.name,
            "defaultWarehouse": wh.default,
            "scrapWarehouse": wh.scrap,
            "suspended": wh.suspended,
            "optLock": wh.opt_lock,
            "lastUpdate": format_last_update(wh.last_update),
            "description": _TRANSIT_DESCRIPTION if wh.system else None,
        }

    def render_item(self, item: Item) -> dict[str, Any]:
        """The item as list.do and detail.do show it (detail adds more)."""
        total = self.item_total(item)
        return {
            "id": item.id,
            "no": item.no,
            "name": item.name,
            "itemType": item.item_type,
            "unit1": {"name": item.unit},
            "unit1Name": item.unit,
            "suspended": item.suspended,
            "upcNo": item.upc_no,
            "optLock": item.opt_lock,
            "lastUpdate": format_last_update(item.last_update),
            "balance": wire.quantity(total),
            "availableToSell": wire.quantity(total),
            "onSales": wire.quantity(Decimal(0)),
        }

    def render_item_detail(self, item: Item) -> dict[str, Any]:
        row = self.render_item(item)
        row["balanceInUnit"] = f"[ {_plain(self.item_total(item))} {item.unit} ]"
        row["detailOpenBalance"] = [
            {
                "id": ob.id,
                "warehouseId": ob.warehouse_id,
                "warehouse": self._warehouse_ref(ob.warehouse_id),
                "quantity": wire.quantity(ob.quantity),
                "asOf": format_date(ob.as_of),
            }
            for ob in item.opening
        ]
        row["detailWarehouseData"] = [
            self._warehouse_data(item, wh) for wh in self.warehouses.values()
        ]
        odd = self.config.accurate.odd_item_balance
        for line in row["detailWarehouseData"] if odd else []:
            key = f"{item.no}/{line['name']}"
            if key in odd:
                line["balance"] = odd[key]
        return row

    def _warehouse_data(self, item: Item, wh: Warehouse) -> dict[str, Any]:
        balance = self.stock.get((item.id, wh.id), Decimal(0))
        return {
            "id": wh.id,
            "name": wh.name,
            "warehouseName": wh.name,
            "balance": wire.quantity(balance),
            "balanceUnit": f"{_plain(balance)} {item.unit}",
            "unit1Quantity": wire.quantity(balance),
            "suspended": wh.suspended,
            "defaultWarehouse": wh.default,
            "scrapWarehouse": wh.scrap,
            "optLock": wh.opt_lock,
            "description": _TRANSIT_DESCRIPTION if wh.system else None,
        }

    def random_rank(self, table: str, row_id: int) -> int:
        """A stable pseudo-random position, for the `random` list order."""
        return zlib.crc32(f"{self.config.seed}:{table}:{row_id}".encode())


def _plain(value: Decimal) -> str:
    """A display quantity as Accurate prints it in `balanceUnit` (`5 KG`)."""
    return format(value.normalize(), "f")
