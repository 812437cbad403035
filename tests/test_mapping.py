"""SKU matching and the quantity offered: cases C12 to C16."""

from __future__ import annotations

from decimal import Decimal

import pytest

from daemon.config import StockRules
from daemon.mapping import (
    Item,
    Override,
    Target,
    normalize_sku,
    offered_quantity,
    resolve_mapping,
)

NO_RULES = StockRules()


def skus(result_targets: dict[int, Target]) -> dict[int, str]:
    return {item: target.sku for item, target in result_targets.items()}


def test_c12_whitespace_variants_map_to_the_forstok_spelling() -> None:
    items = [Item(1, "ABC-01 "), Item(2, "123456  OAK"), Item(3, "XYZ-9\u00a0")]

    result = resolve_mapping(items, {}, ["ABC-01", "123456 OAK", "XYZ-9"])

    assert skus(result.targets) == {1: "ABC-01", 2: "123456 OAK", 3: "XYZ-9"}
    assert result.problems == []


def test_c12_two_accurate_items_on_one_sku_push_nothing() -> None:
    items = [Item(1, "ABC-01 "), Item(2, "ABC-01\u00a0")]

    result = resolve_mapping(items, {}, ["ABC-01"])

    assert result.targets == {}
    (conflict,) = result.problems_of("conflict")
    assert set(conflict.item_nos) == {"ABC-01 ", "ABC-01\u00a0"}


def test_c13_case_folding_beyond_ascii() -> None:
    result = resolve_mapping(
        [Item(1, "abc-01"), Item(2, "café-1")], {}, ["ABC-01", "CAFÉ-1"]
    )

    assert skus(result.targets) == {1: "ABC-01", 2: "CAFÉ-1"}


def test_c13_second_case_variant_in_forstok_is_a_conflict() -> None:
    result = resolve_mapping([Item(1, "abc-01")], {}, ["ABC-01", "abc-01"])

    assert result.targets == {}
    assert result.problems_of("conflict")


def test_c14_two_accurate_items_normalising_alike_without_export() -> None:
    result = resolve_mapping([Item(1, "ABC-01"), Item(2, "abc-01 ")], {}, None)

    assert result.targets == {}
    assert result.problems_of("conflict")[0].item_nos == ("ABC-01", "abc-01 ")


def test_without_export_the_sku_is_the_item_number_as_accurate_spells_it() -> None:
    result = resolve_mapping([Item(1, "Abc-01 ")], {}, None)

    assert skus(result.targets) == {1: "Abc-01 "}


def test_overrides_exclusions_services_and_suspended_items() -> None:
    items = [
        Item(1, "A"),
        Item(2, "B"),
        Item(3, "SVC", item_type="SERVICE"),
        Item(4, "OLD", suspended=True),
    ]
    overrides = {
        "A": Override("A", "A-FORSTOK", Decimal(12)),
        "B": Override("B", excluded=True),
    }

    result = resolve_mapping(items, overrides, None)

    assert skus(result.targets) == {1: "A-FORSTOK"}
    assert result.targets[1].pack_size == Decimal(12)
    assert [p.item_nos for p in result.problems_of("excluded")] == [("B",)]
    assert [p.item_nos for p in result.problems_of("suspended")] == [("OLD",)]


def test_normalize_sku_is_one_function_for_both_sides() -> None:
    assert normalize_sku("  Café\u00a0 -1 ") == normalize_sku("CAFÉ -1")


@pytest.mark.parametrize(
    ("stock", "pack", "expected"),
    [(52900, 1000, 52), (999, 1000, 0), (52900, 1, 52900), (Decimal("7.9"), 1, 7)],
)
def test_c15_pack_size_rounds_down(stock: Decimal, pack: int, expected: int) -> None:
    assert offered_quantity([Decimal(stock)], Decimal(pack), NO_RULES) == expected


def test_c15_pack_size_never_zero_or_negative() -> None:
    with pytest.raises(ValueError, match="pack size"):
        offered_quantity([Decimal(5)], Decimal(0), NO_RULES)


def test_c16_sum_then_clamp() -> None:
    assert offered_quantity([Decimal(-3), Decimal(5)], Decimal(1), NO_RULES) == 2
    assert offered_quantity([Decimal(-3)], Decimal(1), NO_RULES) == 0


def test_stock_rules_apply_buffer_then_percent_then_max() -> None:
    rules = StockRules(buffer=2, percent=50.0, max=10)

    assert offered_quantity([Decimal(12)], Decimal(1), rules) == 5
    assert offered_quantity([Decimal(100)], Decimal(1), rules) == 10
    assert offered_quantity([Decimal(1)], Decimal(1), rules) == 0
