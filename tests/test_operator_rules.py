"""Stock rules end to end: per Forstok warehouse, after its Accurate
warehouses are summed; a global default under per-warehouse rules; the order
sum, clamp at 0, pack size, buffer, percent, max, always rounding down."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from operator_support import (
    cli,
    full_sync,
    on_hand,
    poll,
    running,
    shop,
    write_config,
    write_csv,
)

from daemon.simulator.accurate import LineSpec
from daemon.simulator.config import ItemSpec

Capture = pytest.CaptureFixture[str]


def stocked(no: str, **opening: int) -> ItemSpec:
    """An item with opening stock by warehouse, `GDG_1=5` for GDG-1."""
    return ItemSpec(
        no, opening={k.replace("_", "-"): Decimal(v) for k, v in opening.items()}
    )


def test_worked_example_of_the_operator_guide(tmp_path: Path) -> None:
    """README, "Stock rules": 30 and -4 summed to 26, minus a buffer of 2 is 24,
    90 % of that rounded down is 21, capped at 20; after a sale of 20 the
    same rules give 6 - 2 = 4, 90 % = 3.6, so 3."""
    rules = {"buffer": 2, "percent": 90, "max": 20}
    warehouses = [
        {"accurate": "GDG-1", "forstok_id": 1, **rules},
        {"accurate": "GDG-2", "forstok_id": 1, **rules},
    ]
    with running(shop(stocked("CHAIR", GDG_1=30, GDG_2=-4))) as sim:
        path = write_config(sim, tmp_path, warehouses=warehouses)
        full_sync(path)
        assert on_hand(sim, 1) == {"CHAIR": 20}

        poll(path)  # start the cursors before the sale
        sim.accurate.create_document("sales-invoice", [LineSpec("CHAIR", 20, "GDG-1")])
        poll(path)

        assert on_hand(sim, 1) == {"CHAIR": 3}


def test_global_default_and_per_warehouse_rules(tmp_path: Path) -> None:
    """`stock_rules` applies to every warehouse entry that sets no rule of its
    own; an entry's own buffer, percent and max replace it, per key."""
    warehouses = [
        {"accurate": "GDG-1", "forstok_id": 1, "percent": 50, "max": 5},
        {"accurate": "GDG-3", "forstok_id": 1, "percent": 50, "max": 5},
        {"accurate": "GDG-2", "forstok_id": 2},
    ]
    items = [
        stocked("A", GDG_1=10, GDG_3=4, GDG_2=5),
        stocked("B", GDG_1=3, GDG_2=1),
        stocked("C", GDG_1=-6, GDG_3=4, GDG_2=2),
    ]
    with running(shop(*items)) as sim:
        path = write_config(
            sim, tmp_path, warehouses=warehouses, stock_rules={"buffer": 2}
        )
        full_sync(path)

        # A: 14 - 2 = 12, 50 % = 6, max 5.  B: 3 - 2 = 1, 50 % = 0.5 -> 0.
        # C: -6 + 4 = -2, clamped to 0.      WH-2: stock minus the buffer of 2.
        assert on_hand(sim, 1) == {"A": 5, "B": 0, "C": 0}
        assert on_hand(sim, 2) == {"A": 3, "B": 0, "C": 0}


def test_pack_size_divides_before_the_buffer(tmp_path: Path, capsys: Capture) -> None:
    """The buffer and max count Forstok units: 9 pieces in packs of 2 are 4
    packs, minus a buffer of 1 is 3, 50 % rounded down is 1."""
    warehouses = [{"accurate": "GDG-1", "forstok_id": 1, "buffer": 1, "percent": 50}]
    with running(shop(stocked("D", GDG_1=9))) as sim:
        path = write_config(sim, tmp_path, warehouses=warehouses)
        mapping = write_csv(tmp_path / "m.csv", "accurate_item_no,pack_size\nD,2\n")
        assert cli(capsys, path, "mapping", "import", str(mapping))[0] == 0

        full_sync(path)

        assert on_hand(sim, 1) == {"D": 1}
