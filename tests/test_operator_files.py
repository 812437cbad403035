"""The mapping files an operator writes or exports, parsed without a daemon."""

from __future__ import annotations

from decimal import Decimal

from daemon.mapping import (
    Item,
    MappingResult,
    Override,
    Target,
    changed_targets,
    parse_forstok_export,
    parse_overrides,
    resolve_mapping,
)


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def test_override_columns_are_named_loosely_and_may_be_left_out() -> None:
    """Headers match in any case and with spaces; only the item is required;
    an empty pack size is 1 and an empty exclude is no."""
    text = 'Accurate Item No,Forstok SKU,Pack Size\n"A ",FA,12\nB,,\n'

    overrides, problems = parse_overrides(lines(text))

    assert problems == []
    assert overrides == [
        Override("A ", "FA", Decimal(12), False),
        Override("B", None, Decimal(1), False),
    ]


def test_override_file_without_an_item_column_is_refused() -> None:
    """A file that does not name the item column is one problem, not rows."""
    overrides, problems = parse_overrides(lines("sku,pack\nA,1\n"), "m.csv")

    assert overrides == []
    assert problems[0].startswith("m.csv: the first line must name the columns")


def test_every_bad_override_row_is_reported_with_its_line() -> None:
    """Empty item, bad pack size, unclear exclude and a repeated item are each
    reported with their line number, in one pass."""
    text = (
        "accurate_item_no,pack_size,exclude\n,1,\nA,-2,\nB,1,perhaps\nC,1,x\n\nC,2,\n"
    )

    overrides, problems = parse_overrides(lines(text), "m.csv")

    assert overrides == [Override("C", None, Decimal(1), True)]
    assert problems == [
        "m.csv:2: accurate_item_no is empty",
        "m.csv:3: pack_size '-2' is not a positive number",
        "m.csv:4: exclude 'perhaps' is neither yes nor no",
        "m.csv:7: item 'C' is already on line 5",
    ]


def test_forstok_export_keeps_raw_spellings_once_each() -> None:
    """The SKU column is found by name among others; values keep Forstok's
    spelling, empty cells are skipped and repeats are kept once."""
    text = "Product Name,SKU Seller,Qty\nKursi,ABC-01 ,3\nMeja,,1\nKursi L,ABC-01 ,2\n"

    assert parse_forstok_export(lines(text)) == (["ABC-01 "], [])


def test_changed_targets_are_new_or_different_ones() -> None:
    """An item whose SKU or pack size changed, or that became mapped, must
    be pushed again; an unchanged or unmapped one need not."""
    before = resolve_mapping([Item(1, "A"), Item(2, "B"), Item(3, "C")], {}, None)
    after = MappingResult(
        targets={
            1: Target(1, "A", "A", Decimal(1)),
            2: Target(2, "B", "B", Decimal(6)),
            4: Target(4, "D", "D", Decimal(1)),
        }
    )

    assert changed_targets(before, after) == {2, 4}


def test_an_override_matching_two_items_loosely_applies_to_neither() -> None:
    """`ABC-01` would match both `ABC-01 ` and `ABC-01\\u00a0`: a loose match
    applies only when it picks out one item, so the conflict stays visible."""
    items = [Item(1, "ABC-01 "), Item(2, "ABC-01\u00a0")]

    result = resolve_mapping(items, {"ABC-01": Override("ABC-01", "X")}, None)

    assert result.targets == {}
    assert result.problems_of("conflict")
