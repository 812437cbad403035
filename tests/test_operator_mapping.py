"""Mapping end to end: SKU matching, conflicts, overrides, exclusions,
suspended and non-inventory items, and Forstok's "not found" answers (C12-C15),
each run through the real engine against the simulator and checked in
`stocksync mapping --json`."""

from __future__ import annotations

from pathlib import Path

import pytest
from operator_support import (
    cli,
    cli_json,
    forstok_quantity_requests,
    full_sync,
    item,
    on_hand,
    poll,
    running,
    shop,
    write_config,
    write_csv,
)

Capture = pytest.CaptureFixture[str]


def test_c12_whitespace_variants_push_to_the_forstok_spelling(
    tmp_path: Path, capsys: Capture
) -> None:
    """Numbers that differ from Forstok's SKUs only in whitespace map, and
    each push uses Forstok's raw spelling (Forstok refuses any other)."""
    config = shop(
        item("ABC-01 ", 7),
        item("123456  OAK", 4),
        item("XYZ-9\u00a0", 9),
        forstok=["ABC-01", "123456 OAK", "XYZ-9"],
    )
    with running(config) as sim:
        path = write_config(sim, tmp_path)
        export = write_csv(
            tmp_path / "export.csv",
            "Name,SKU\nKursi,ABC-01\nMeja,123456 OAK\nLampu,XYZ-9\n",
        )
        code, out, _ = cli(capsys, path, "mapping", "import-forstok", str(export))
        assert (code, "imported 3 Forstok SKUs" in out) == (0, True)

        full_sync(path)

        assert on_hand(sim, 1) == {"ABC-01": 7, "123456 OAK": 4, "XYZ-9": 9}
        report = cli_json(capsys, path, "mapping")
        assert {(m["item"], m["sku"]) for m in report["mapped"]} == {
            ("ABC-01 ", "ABC-01"),
            ("123456  OAK", "123456 OAK"),
            ("XYZ-9\u00a0", "XYZ-9"),
        }
        assert report["conflicts"] == report["unmapped"] == []


def test_c12_two_items_on_one_forstok_sku_push_nothing(
    tmp_path: Path, capsys: Capture
) -> None:
    """Two Accurate items normalising to one Forstok SKU are a conflict:
    neither is pushed, and the report names both raw numbers."""
    config = shop(
        item("ABC-01 ", 7), item("ABC-01\u00a0", 3), item("OK-1", 2), forstok=[]
    )
    with running(config) as sim:
        path = write_config(sim, tmp_path)
        export = write_csv(tmp_path / "export.csv", "SKU\nABC-01\nOK-1\n")
        cli(capsys, path, "mapping", "import-forstok", str(export))

        full_sync(path)

        assert on_hand(sim, 1) == {"OK-1": 2}
        (conflict,) = cli_json(capsys, path, "mapping")["conflicts"]
        assert sorted(conflict["items"]) == ["ABC-01 ", "ABC-01\u00a0"]
        assert conflict["skus"] == ["ABC-01"]


def test_c13_case_is_folded_beyond_ascii(tmp_path: Path, capsys: Capture) -> None:
    """`abc-01` and `café-1` in Accurate reach Forstok's `ABC-01` and
    `CAFÉ-1`: the match is case-folded, the push keeps Forstok's case."""
    config = shop(item("abc-01", 5), item("café-1", 6), forstok=["ABC-01", "CAFÉ-1"])
    with running(config) as sim:
        path = write_config(sim, tmp_path)
        export = write_csv(tmp_path / "export.csv", "SKU\nABC-01\nCAFÉ-1\n")
        cli(capsys, path, "mapping", "import-forstok", str(export))

        full_sync(path)

        assert on_hand(sim, 1) == {"ABC-01": 5, "CAFÉ-1": 6}


def test_c14_items_alike_once_normalised_conflict_without_an_export(
    tmp_path: Path, capsys: Capture
) -> None:
    """Without an export, `ABC-01` and `abc-01 ` in Accurate would both be
    pushed to one Forstok SKU: neither is pushed, and a conflict is reported."""
    with running(shop(item("ABC-01", 4), item("abc-01 ", 1), item("B", 2))) as sim:
        path = write_config(sim, tmp_path)

        full_sync(path)

        assert on_hand(sim, 1) == {"B": 2}
        report = cli_json(capsys, path, "mapping")
        assert [c["items"] for c in report["conflicts"]] == [["ABC-01", "abc-01 "]]
        assert report["summary"]["conflicts"] == 1


def test_an_item_missing_from_the_export_is_unmapped(
    tmp_path: Path, capsys: Capture
) -> None:
    """With an export imported, an item whose SKU it lacks is not pushed and
    is listed as unmapped."""
    with running(shop(item("A", 1), item("B", 2))) as sim:
        path = write_config(sim, tmp_path)
        cli(
            capsys,
            path,
            "mapping",
            "import-forstok",
            str(write_csv(tmp_path / "export.csv", "SKU\nA\n")),
        )

        full_sync(path)

        assert on_hand(sim, 1) == {"A": 1}
        (unmapped,) = cli_json(capsys, path, "mapping")["unmapped"]
        assert (unmapped["item"], unmapped["sku"]) == ("B", "B")


def test_not_found_answer_marks_the_pair_unmapped_until_retry(
    tmp_path: Path, capsys: Capture
) -> None:
    """A "variant not found" answer marks the pair unmapped: it is reported,
    the next full sync sends nothing for it (C14, a renamed SKU), and
    `stocksync retry` pushes it again once Forstok knows the SKU."""
    with running(shop(item("A", 1), item("B", 2, 3), forstok=["A"])) as sim:
        path = write_config(sim, tmp_path)
        full_sync(path)
        assert on_hand(sim, 1) == {"A": 1}

        unmapped = cli_json(capsys, path, "mapping")["unmapped"]
        assert {(u["item"], u["sku"], u["forstok_warehouse"]) for u in unmapped} == {
            ("B", "B", 1),
            ("B", "B", 2),
        }
        assert "variant not found" in unmapped[0]["why"]
        status = cli_json(capsys, path, "status")
        assert len(status["not_found_in_forstok"]) == 2

        sent = forstok_quantity_requests(sim)
        full_sync(path)
        assert forstok_quantity_requests(sim) == sent

        with sim.lock:
            sim.forstok.products["B"] = [7]  # the merchant creates it in Forstok
        code, out, _ = cli(capsys, path, "retry", "b")
        assert code == 0
        assert out.startswith("released 2 pairs not found in Forstok; 1 item ")
        poll(path)

        assert on_hand(sim, 1) == {"A": 1, "B": 2}
        assert on_hand(sim, 2)["B"] == 3
        assert cli_json(capsys, path, "mapping")["unmapped"] == []


def test_overrides_rename_exclude_and_divide_by_pack_size(
    tmp_path: Path, capsys: Capture
) -> None:
    """An override maps an item to another Forstok SKU with a pack size (the
    stock divided by it, rounded down: C15), and excludes another item."""
    items = [item("E", 52900), item("F", 999), item("G", 5), item("H", 4)]
    with running(shop(*items)) as sim:
        path = write_config(sim, tmp_path)
        overrides = write_csv(
            tmp_path / "map.csv",
            "accurate_item_no,forstok_sku,pack_size,exclude\n"
            "E,E-BOX,1000,\n"
            "F,F-BOX,1000,no\n"
            "G,,,yes\n",
        )
        code, out, _ = cli(capsys, path, "mapping", "import", str(overrides))
        assert (code, out.startswith("imported 3 mapping overrides")) == (0, True)

        full_sync(path)

        assert on_hand(sim, 1) == {"E-BOX": 52, "F-BOX": 0, "H": 4}
        report = cli_json(capsys, path, "mapping")
        assert {(m["item"], m["sku"], m["pack_size"]) for m in report["mapped"]} == {
            ("E", "E-BOX", "1000"),
            ("F", "F-BOX", "1000"),
            ("H", "H", "1"),
        }
        assert [e["item"] for e in report["excluded"]] == ["G"]


def test_override_written_without_accurate_spacing_still_applies(
    tmp_path: Path, capsys: Capture
) -> None:
    """An override for `ABC-01` applies to Accurate's `ABC-01 `: item numbers
    match through the same normalisation as SKUs."""
    with running(shop(item("ABC-01 ", 8))) as sim:
        path = write_config(sim, tmp_path)
        cli(
            capsys,
            path,
            "mapping",
            "import",
            str(
                write_csv(
                    tmp_path / "map.csv", "accurate_item_no,forstok_sku\nABC-01,FS-1\n"
                )
            ),
        )

        full_sync(path)

        assert on_hand(sim, 1) == {"FS-1": 8}


def test_an_exclusion_resolves_a_conflict(tmp_path: Path, capsys: Capture) -> None:
    """Excluding one of two conflicting items lets the other be pushed."""
    with running(shop(item("ABC-01", 4), item("abc-01 ", 1))) as sim:
        path = write_config(sim, tmp_path)
        cli(
            capsys,
            path,
            "mapping",
            "import",
            str(
                write_csv(
                    tmp_path / "map.csv", 'accurate_item_no,exclude\n"abc-01 ",yes\n'
                )
            ),
        )

        full_sync(path)

        assert on_hand(sim, 1) == {"ABC-01": 4}
        assert cli_json(capsys, path, "mapping")["conflicts"] == []


def test_suspended_and_service_items_are_not_pushed(
    tmp_path: Path, capsys: Capture
) -> None:
    """A suspended item is reported and not pushed, also once it is suspended
    while the daemon runs; a service (non-inventory) item is ignored."""
    items = [
        item("A", 1),
        item("OLD", 2, suspended=True),
        item("SVC", item_type="SERVICE"),
        item("B", 3),
    ]
    with running(shop(*items)) as sim:
        path = write_config(sim, tmp_path)
        full_sync(path)
        assert on_hand(sim, 1) == {"A": 1, "B": 3}

        sim.accurate.set_item("B", suspended=True)
        poll(path)
        sim.accurate.adjust_stock_to("B", "GDG-1", 9)
        full_sync(path)

        assert on_hand(sim, 1) == {"A": 1, "B": 3}
        report = cli_json(capsys, path, "mapping")
        assert sorted(s["item"] for s in report["suspended"]) == ["B", "OLD"]
        assert report["services_ignored"] == 1
        assert report["unmapped"] == []


def test_c14_a_renamed_item_leaves_its_old_sku_listed_as_stale(
    tmp_path: Path, capsys: Capture
) -> None:
    """Renamed in Accurate, an item is pushed under its new number; Forstok
    keeps the old SKU's last quantity, and the report says so until the
    operator deals with it there."""
    with running(shop(item("TEST", 5), item("KEEP", 3))) as sim:
        path = write_config(sim, tmp_path)
        full_sync(path)
        sim.accurate.rename_item("TEST", "TEST-P")

        full_sync(path)

        report = cli_json(capsys, path, "mapping")
        stale = {s["forstok_warehouse"]: s for s in report["stale_skus"]}
        assert {s["sku"] for s in stale.values()} == {"TEST"}
        assert stale[1]["last_pushed"] == 5
        assert on_hand(sim, 1)["TEST-P"] == 5
        code, text, _ = cli(capsys, path, "mapping")
        assert (code, "SKUs no Accurate item has any more" in text) == (0, True)
