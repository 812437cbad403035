"""Operator files that must be refused rather than guessed at: implausible
pack sizes (C15), an empty Forstok export, item numbers repeated in another
spelling (C12, C13), and headers that name one column twice.

Each file is real and imported through the real command line into a real
state file; where the outcome reaches Forstok, the simulator shows it.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from operator_support import (
    cli,
    cli_json,
    full_sync,
    item,
    on_hand,
    running,
    shop,
    write_config,
    write_csv,
)

from daemon.cli import EX_DATAERR, EX_USAGE
from daemon.mapping import (
    Item,
    Override,
    parse_forstok_export,
    parse_overrides,
    resolve_mapping,
)

Capture = pytest.CaptureFixture[str]

RANGE = "from 0.001 to 1000000, with at most 3 decimals"


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


# -- pack sizes (C15) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("pack", "why"),
    [
        ("0.0000001", f"is out of range: a pack size is {RANGE}"),
        ("0.0005", f"is out of range: a pack size is {RANGE}"),
        ("9" * 30, f"is out of range: a pack size is {RANGE}"),
        ("1000001", f"is out of range: a pack size is {RANGE}"),
        ("0.1234", f"has more than 3 decimals: a pack size is {RANGE}"),
        ("1e-9", f"is out of range: a pack size is {RANGE}"),
        ("0,25", "is not a positive number (write decimals with a dot: 0.25)"),
        ("Infinity", "is not a positive number"),
    ],
)
def test_an_implausible_pack_size_is_refused_with_its_line_and_range(
    pack: str, why: str
) -> None:
    """A pack size outside 0.001..1000000 or finer than 0.001 is a typo:
    the problem names the file, the line, the value and what is accepted."""
    text = f'accurate_item_no,pack_size\nA,2\nSKU-0004,"{pack}"\n'

    overrides, problems = parse_overrides(lines(text), "m.csv")

    assert problems == [f"m.csv:3: pack_size {pack!r} {why}"]
    assert [o.item_no for o in overrides] == ["A"]


@pytest.mark.parametrize("pack", ["0.001", "0.25", "1", "12.5", "1000000", "1E+3"])
def test_plausible_pack_sizes_are_accepted(pack: str) -> None:
    """The bounds themselves, fractions such as 0.25 kg, and whole numbers
    in any notation Decimal reads are accepted unchanged."""
    overrides, problems = parse_overrides(lines(f"item_no,pack_size\nA,{pack}\n"))

    assert problems == []
    assert overrides == [Override("A", None, Decimal(pack))]


def test_a_tiny_pack_size_is_refused_whole_and_nothing_is_pushed_with_it(
    tmp_path: Path, capsys: Capture
) -> None:
    """The tester's row `SKU-0004,,0.0000001,` would push 60,000,000 for 6
    units: exit 65, nothing imported, and the full sync pushes the plain 6."""
    with running(shop(item("SKU-0004", 6))) as sim:
        path = write_config(sim, tmp_path)
        bad = write_csv(
            tmp_path / "m.csv",
            "accurate_item_no,forstok_sku,pack_size,exclude\nSKU-0004,,0.0000001,\n",
        )

        code, out, err = cli(capsys, path, "mapping", "import", str(bad))
        full_sync(path)

        assert (code, out) == (EX_DATAERR, "")
        assert "m.csv:2: pack_size '0.0000001' is out of range" in err
        assert RANGE in err
        assert "nothing imported" in err
        assert on_hand(sim, 1) == {"SKU-0004": 6}


def test_a_fractional_pack_size_divides_and_rounds_down(
    tmp_path: Path, capsys: Capture
) -> None:
    """Stock kept in kg and sold in 0.25 kg packs: 3 kg are 12 packs, and
    3.2 kg are 12 too (12.8, rounded down)."""
    with running(shop(item("BERAS", 3, 3))) as sim:
        path = write_config(sim, tmp_path)
        overrides = write_csv(
            tmp_path / "m.csv", "accurate_item_no,forstok_sku,pack_size\nBERAS,,0.25\n"
        )
        assert cli(capsys, path, "mapping", "import", str(overrides))[0] == 0

        full_sync(path)

        assert on_hand(sim, 1) == {"BERAS": 12}
        sim.accurate.adjust_stock_to("BERAS", "GDG-1", Decimal("3.2"))
        full_sync(path)
        assert on_hand(sim, 1) == {"BERAS": 12}
        (mapped,) = cli_json(capsys, path, "mapping")["mapped"]
        assert mapped["pack_size"] == "0.25"


def test_a_stored_implausible_pack_size_is_never_used() -> None:
    """An override stored before the bounds existed leaves its item
    unmapped, named with the value and the fix, instead of pushing with it."""
    items = [Item(1, "SKU-0004"), Item(2, "B")]
    stored = {"SKU-0004": Override("SKU-0004", None, Decimal("1E-7"))}

    result = resolve_mapping(items, stored, None)

    assert set(result.targets) == {2}
    (problem,) = result.problems_of("unmapped")
    assert problem.item_nos == ("SKU-0004",)
    assert "pack_size '1E-7' is out of range" in problem.detail
    assert "import the overrides again" in problem.detail


# -- the Forstok export -----------------------------------------------------------


def test_an_export_without_sku_rows_is_refused_and_the_old_one_stays(
    tmp_path: Path, capsys: Capture
) -> None:
    """A header-only export would unmap every item and stop every push: exit
    65, "nothing imported", why, and the export in place stays in use."""
    with running(shop(item("A", 1), item("B", 2))) as sim:
        path = write_config(sim, tmp_path)
        good = write_csv(tmp_path / "good.csv", "SKU\nA\nB\n")
        assert cli(capsys, path, "mapping", "import-forstok", str(good))[0] == 0
        empty = write_csv(tmp_path / "empty.csv", "Product Name,SKU Seller,Qty\n")

        code, out, err = cli(capsys, path, "mapping", "import-forstok", str(empty))
        full_sync(path)

        assert (code, out) == (EX_DATAERR, "")
        assert "empty.csv: no SKU in column 'SKU Seller'" in err
        assert "every item would be unmapped" in err
        assert "import-forstok --clear" in err
        assert "nothing imported" in err
        export = cli_json(capsys, path, "mapping")["forstok_export"]
        assert (export["source"], export["skus"]) == (str(good), 2)
        assert on_hand(sim, 1) == {"A": 1, "B": 2}


def test_clear_forgets_the_export_and_items_push_under_their_numbers(
    tmp_path: Path, capsys: Capture
) -> None:
    """`import-forstok --clear` is the deliberate way back to no export: an
    item the export lacked is pushed again under its own number."""
    with running(shop(item("A", 1), item("B", 2))) as sim:
        path = write_config(sim, tmp_path)
        only_a = write_csv(tmp_path / "export.csv", "SKU\nA\n")
        assert cli(capsys, path, "mapping", "import-forstok", str(only_a))[0] == 0
        full_sync(path)
        assert on_hand(sim, 1) == {"A": 1}

        code, out, _ = cli(capsys, path, "mapping", "import-forstok", "--clear")
        full_sync(path)

        assert code == 0
        assert out.startswith(f"forgot the Forstok export from {only_a}")
        report = cli_json(capsys, path, "mapping")
        assert report["forstok_export"]["imported"] is False
        assert report["unmapped"] == []
        assert on_hand(sim, 1) == {"A": 1, "B": 2}
        code, out, _ = cli(capsys, path, "mapping", "import-forstok", "--clear")
        assert (code, out.strip()) == (
            0,
            "no Forstok export is imported; nothing changed",
        )


@pytest.mark.parametrize(
    "args",
    [["mapping", "import-forstok"], ["mapping", "import-forstok", "x.csv", "--clear"]],
)
def test_import_forstok_takes_a_file_or_clear_not_both(
    tmp_path: Path, capsys: Capture, args: list[str]
) -> None:
    """Neither, or both, is a usage error (64): forgetting is never implied."""
    config = write_csv(tmp_path / "config.yaml", "")

    with pytest.raises(SystemExit) as stopped:
        cli(capsys, config, *args)

    assert stopped.value.code == EX_USAGE
    assert "FILE" in capsys.readouterr().err


def test_an_export_with_two_sku_columns_is_refused_naming_them() -> None:
    """`SKU` beside `Seller SKU`: which one Forstok's listings use is not
    ours to guess."""
    text = "Name,SKU,Seller SKU\nKursi,MASTER-1,KRS-01\n"

    assert parse_forstok_export(lines(text), "export.csv") == (
        [],
        [
            "export.csv: columns 'SKU', 'Seller SKU' each name a SKU; delete or "
            "rename all but the one Forstok pushes use, and import again"
        ],
    )


# -- repeated items and columns (C12, C13) ------------------------------------------


def test_items_alike_once_normalised_are_listed_twice(
    tmp_path: Path, capsys: Capture
) -> None:
    """`SKU-0003`, `sku-0003` and ` SKU-0003 ` are one item to the mapping,
    so the file is refused naming both lines of each repeat."""
    with running(shop(item("SKU-0003", 4))) as sim:
        path = write_config(sim, tmp_path)
        overrides = write_csv(
            tmp_path / "m.csv",
            "accurate_item_no,forstok_sku\n"
            "SKU-0003,X\n"
            "sku-0003,Y\n"
            '" SKU-0003 ",Z\n'
            "SKU\u00a00004,W\n"
            "sku  0004,V\n",
        )

        code, _, err = cli(capsys, path, "mapping", "import", str(overrides))

        assert code == EX_DATAERR
        assert (
            "m.csv:3: item 'sku-0003' is item 'SKU-0003' of line 2 once case and "
            "spacing are ignored; keep one of the two lines"
        ) in err
        assert "m.csv:4: item ' SKU-0003 ' is item 'SKU-0003' of line 2" in err
        assert "m.csv:6: item 'sku  0004' is item 'SKU\\xa00004' of line 5" in err
        assert "nothing imported" in err
        assert cli_json(capsys, path, "mapping")["mapped"] == []  # never ran


@pytest.mark.parametrize(
    ("header", "named"),
    [
        ("accurate_item_no,pack_size,accurate_item_no", "'accurate_item_no', "),
        ("Item No,pack_size,Accurate Item No", "'Item No', 'Accurate Item No'"),
        ("accurate_item_no,Pack Size,pack_size", "'Pack Size', 'pack_size'"),
    ],
)
def test_a_column_named_twice_is_refused_naming_both(header: str, named: str) -> None:
    """Two headers for one column are not resolved to the last: the file is
    refused, naming the columns, before any row is read."""
    overrides, problems = parse_overrides(lines(f"{header}\nA,1,B\n"), "m.csv")

    assert overrides == []
    assert len(problems) == 1
    assert problems[0].startswith(f"m.csv: columns {named}")
    assert problems[0].endswith("; keep one of them and import again")
