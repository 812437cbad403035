"""Stock: what each document kind does, and how stock reads back (§7, §8)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from daemon.simulator import LineSpec, ManualClock, SimConfig, Simulator
from daemon.simulator.documents import KINDS
from simulator.simhttp import query, small_shop

OUT_KINDS = {
    "delivery-order",
    "sales-invoice",
    "purchase-return",
    "job-order",
    "material-adjustment",
    "material-slip",
    "vendor-claim",  # default type VENDOR_CLAIM_OUT
}
IN_KINDS = {
    "sales-return",
    "receive-item",
    "purchase-invoice",
    "roll-over",
    "finished-good-slip",
    "item-adjustment",  # default line type ADJUSTMENT_IN
    "customer-claim",  # default type CUSTOMER_CLAIM_IN
}


async def stock(client: httpx.AsyncClient, item: str, warehouse: str) -> Decimal:
    """On hand read over HTTP, as a client would."""
    response = await client.get(
        f"/item/get-stock.do?{query(no=item, warehouseName=warehouse)}"
    )
    body = response.json()
    assert body["s"] is True, body
    return Decimal(str(body["d"]["availableStock"]))


def _expected(kind: str, before: Decimal, quantity: int) -> Decimal:
    if kind == "stock-opname-result":
        return Decimal(quantity)  # the counted figure
    sign = 1 if kind in IN_KINDS else -1
    return before + sign * quantity


def test_every_kind_is_classified() -> None:
    """The test's IN/OUT table covers all kinds but the two special ones."""
    special = {"item-transfer", "stock-opname-result"}
    assert set(KINDS) == OUT_KINDS | IN_KINDS | special
    assert len(KINDS) == 16  # plus the opening balance on the item: 17


@pytest.mark.parametrize("kind", sorted(set(KINDS) - {"item-transfer"}))
async def test_kind_effect_on_create_edit_delete(
    sim: Simulator, accurate: httpx.AsyncClient, kind: str
) -> None:
    """Create applies the effect, an edit moving the line to another item and
    warehouse reverses it there and applies it here, delete reverses it."""
    doc = sim.accurate.create_document(kind, [LineSpec("A", 2, "GDG-1")])
    assert await stock(accurate, "A", "GDG-1") == _expected(kind, Decimal(10), 2)

    sim.accurate.edit_document(kind, doc.id, lines=[LineSpec("B", 1, "GDG-2")])
    assert await stock(accurate, "A", "GDG-1") == 10
    assert await stock(accurate, "B", "GDG-2") == _expected(kind, Decimal(0), 1)

    sim.accurate.delete_document(kind, doc.id)
    assert await stock(accurate, "B", "GDG-2") == 0
    assert await stock(accurate, "A", "GDG-1") == 10


async def test_transfer_moves_both_warehouses(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """IT-1 GDG-1 -> GDG-2 of 5: -5 at the source, +5 at the target (C11)."""
    doc = sim.accurate.create_document(
        "item-transfer",
        [LineSpec("A", 5)],
        warehouse="GDG-1",
        reference_warehouse="GDG-2",
    )
    moved = (await stock(accurate, "A", "GDG-1"), await stock(accurate, "A", "GDG-2"))
    detail = (await accurate.get(f"/item-transfer/detail.do?id={doc.id}")).json()["d"]
    sim.accurate.delete_document("item-transfer", doc.id)
    assert moved == (Decimal(5), Decimal(5))
    assert detail["warehouse"]["name"] == "GDG-1"
    assert detail["referenceWarehouse"]["name"] == "GDG-2"
    assert detail["itemTransferType"] == "TRANSFER"
    assert await stock(accurate, "A", "GDG-2") == 0


async def test_two_step_transfer_passes_through_transit(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """TRANSFER_OUT parks goods in Transit; TRANSFER_IN takes them out."""
    for doc_type in ("TRANSFER_OUT", "TRANSFER_IN"):
        sim.accurate.create_document(
            "item-transfer",
            [LineSpec("A", 4)],
            warehouse="GDG-1",
            reference_warehouse="GDG-3",
            doc_type=doc_type,
        )
        if doc_type == "TRANSFER_OUT":
            in_transit = await stock(accurate, "A", "Transit (AOL System)")
    assert in_transit == 4
    assert await stock(accurate, "A", "Transit (AOL System)") == 0
    assert await stock(accurate, "A", "GDG-3") == 4


async def test_unit_ratio_negative_and_fractional_stock(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """Base quantity is quantity x unitRatio; stock may go below zero and
    hold fractions."""
    sim.accurate.create_document(
        "sales-invoice", [LineSpec("B", 1, "GDG-1", unit="BOX", unit_ratio=12)]
    )
    sim.accurate.create_document("receive-item", [LineSpec("D", "2.5", "GDG-1")])
    assert await stock(accurate, "B", "GDG-1") == -6
    assert await stock(accurate, "D", "GDG-1") == Decimal("2.5")


async def test_linked_unapproved_and_service_lines_move_nothing(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """A DO-linked invoice line, an unapproved document and a service item
    leave stock alone; approving the document applies it."""
    sim.accurate.create_document(
        "sales-invoice", [LineSpec("A", 1, "GDG-1", linked_id=7)]
    )
    draft = sim.accurate.create_document(
        "sales-invoice", [LineSpec("A", 2, "GDG-1")], approval_status="UNAPPROVED"
    )
    sim.accurate.create_document("sales-invoice", [LineSpec("SVC", 1, "GDG-1")])
    untouched = await stock(accurate, "A", "GDG-1")
    sim.accurate.edit_document("sales-invoice", draft.id, approval_status="APPROVED")
    assert untouched == 10
    assert await stock(accurate, "A", "GDG-1") == 8


async def test_opening_balance_lives_on_the_item(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """Kind 1: changing it bumps the item's optLock and lastUpdate and stock."""
    before = (await accurate.get("/item/detail.do?no=C")).json()["d"]
    sim.accurate.set_opening_balance("C", "GDG-2", 7, last_update="02/02/2026 08:00:00")
    after = (await accurate.get("/item/detail.do?no=C")).json()["d"]
    assert after["optLock"] == before["optLock"] + 1
    assert after["lastUpdate"] == "02/02/2026 08:00:00"
    assert after["detailOpenBalance"][0]["warehouse"]["name"] == "GDG-2"
    assert await stock(accurate, "C", "GDG-2") == 7


async def test_item_detail_lists_every_warehouse_with_transit(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """detailWarehouseData has a row per warehouse, the Transit one included."""
    body = (await accurate.get("/item/detail.do?no=A")).json()["d"]
    rows = {row["name"]: row for row in body["detailWarehouseData"]}
    assert set(rows) == {"Transit (AOL System)", "GDG-1", "GDG-2", "GDG-3"}
    assert Decimal(str(rows["GDG-1"]["balance"])) == 10
    assert rows["GDG-1"]["balanceUnit"] == "10 PCS"
    assert rows["GDG-1"]["warehouseName"] == "GDG-1"


async def test_list_stock_omits_items_that_never_moved(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """list-stock.do shows moved items only (switchable), never services."""
    gdg1 = sim.accurate.warehouse_by_name("GDG-1").id
    path = f"/item/list-stock.do?warehouseId={gdg1}"
    sparse = (await accurate.get(path)).json()
    sim.config.accurate.list_stock_omits_untouched = False
    full = (await accurate.get(path)).json()
    by_name = (await accurate.get("/item/list-stock.do?warehouseName=GDG-1")).json()
    assert [(r["no"], r["quantity"]) for r in sparse["d"]] == [("A", 10), ("B", 6)]
    assert [r["no"] for r in full["d"]] == ["A", "B", "C", "D"]
    assert by_name["d"] == full["d"]
    assert set(full["d"][0]) == {
        "id",
        "no",
        "name",
        "quantity",
        "quantityInAllUnit",
        "upcNo",
    }


async def test_get_stock_of_unknown_item_names_barang_and_jasa(
    accurate: httpx.AsyncClient,
) -> None:
    """An unknown `no` is `s:false` with a text naming "Barang & Jasa"."""
    body = (await accurate.get("/item/get-stock.do?no=NOPE")).json()
    total = (await accurate.get("/item/get-stock.do?no=A")).json()
    assert body["s"] is False
    assert "Barang & Jasa" in body["d"][0]
    assert total["d"]["availableStock"] == 10


@pytest.fixture
def sim_config() -> SimConfig:
    """Every test here runs on a manual clock at 01/02/2026 10:00:00 WIB."""
    config = small_shop()
    config.clock = ManualClock(datetime(2026, 2, 1, 3, 0, tzinfo=UTC))
    return config


async def test_lastupdate_is_wib_wall_clock_and_late_commit_hides(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """Stamps are Asia/Jakarta wall clock; a late commit is invisible (and
    moves no stock) until the business clock passes it."""
    clock = sim.config.clock
    assert isinstance(clock, ManualClock)
    sim.accurate.create_document(
        "sales-invoice", [LineSpec("A", 1, "GDG-1")], visible_in_s=5
    )
    hidden = (await accurate.get("/sales-invoice/list.do?fields=lastUpdate")).json()
    hidden_stock = await stock(accurate, "A", "GDG-1")
    clock.advance(5)
    shown = (await accurate.get("/sales-invoice/list.do?fields=lastUpdate")).json()
    assert hidden["d"] == []
    assert hidden_stock == 10
    assert shown["d"] == [{"lastUpdate": "01/02/2026 10:00:00"}]
    assert await stock(accurate, "A", "GDG-1") == 9
