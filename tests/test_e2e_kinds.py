"""Every stock-affecting kind, end to end: Accurate changes, Forstok follows.

For each of the 17 kinds a document is created, edited and deleted in the
simulated Accurate; the real engine polls (and, for the delete, runs a full
sync), and Forstok must then equal Accurate for every mapped pair (C11).
"""

from __future__ import annotations

import pytest
from harness import Harness, mismatches

from daemon.simulator.accurate import LineSpec

DOCUMENT_KINDS = [
    "delivery-order",
    "sales-invoice",
    "sales-return",
    "receive-item",
    "purchase-invoice",
    "purchase-return",
    "job-order",
    "roll-over",
    "material-adjustment",
    "item-adjustment",
    "item-transfer",
    "stock-opname-result",
    "vendor-claim",
    "customer-claim",
    "material-slip",
    "finished-good-slip",
]


def create(h: Harness, kind: str, quantity: int, item: str = "SKU-001") -> int:
    accurate = h.sim.accurate
    if kind == "item-transfer":
        line = LineSpec(item, quantity)
        doc = accurate.create_document(
            kind, [line], warehouse="GDG-1", reference_warehouse="GDG-2"
        )
        return doc.id
    line_type = "ADJUSTMENT_OUT" if kind == "item-adjustment" else None
    line = LineSpec(item, quantity, "GDG-1", line_type=line_type)
    return accurate.create_document(kind, [line]).id


async def converge(h: Harness) -> None:
    await h.engine.poll()
    assert mismatches(h.sim) == {}


async def test_initial_full_sync_converges(harness: Harness) -> None:
    """A new state's full sync brings every mapped pair to Accurate's value."""
    await harness.engine.full_sync("test")

    assert mismatches(harness.sim) == {}
    assert len(harness.sim.forstok.on_hand_snapshot()) == 12


@pytest.mark.parametrize("kind", DOCUMENT_KINDS)
async def test_c11_kind_created_edited_deleted(harness: Harness, kind: str) -> None:
    """A document of this kind moves stock; the next poll makes Forstok follow."""
    await harness.engine.full_sync("test")
    await harness.engine.poll()

    doc_id = create(harness, kind, 3)
    await converge(harness)

    line_type = "ADJUSTMENT_OUT" if kind == "item-adjustment" else None
    warehouse = None if kind == "item-transfer" else "GDG-2"
    harness.sim.accurate.edit_document(
        kind, doc_id, lines=[LineSpec("SKU-002", 2, warehouse, line_type=line_type)]
    )
    await converge(harness)

    harness.sim.accurate.delete_document(kind, doc_id)
    await harness.engine.full_sync("test")
    assert mismatches(harness.sim) == {}


async def test_c11_opening_balance(harness: Harness) -> None:
    """Kind 1 lives on the item: a changed opening balance re-reads the item."""
    await harness.engine.full_sync("test")
    await harness.engine.poll()

    harness.sim.accurate.set_opening_balance("SKU-003", "GDG-2", 40)

    await converge(harness)


async def test_c11_transfer_updates_both_warehouses_in_one_poll(
    harness: Harness,
) -> None:
    await harness.engine.full_sync("test")
    await harness.engine.poll()
    before = harness.sim.forstok.on_hand_snapshot()

    harness.sim.accurate.create_document(
        "item-transfer",
        [LineSpec("SKU-004", 5)],
        warehouse="GDG-1",
        reference_warehouse="GDG-2",
    )
    await harness.engine.poll()

    after = harness.sim.forstok.on_hand_snapshot()
    assert after[("SKU-004", 1)] == before[("SKU-004", 1)] - 5
    assert after[("SKU-004", 2)] == before[("SKU-004", 2)] + 5
