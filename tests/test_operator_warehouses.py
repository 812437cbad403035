"""Configured warehouses that Accurate does not have, or no longer has:
reported loudly and not pushed, never a configuration error."""

from __future__ import annotations

from pathlib import Path

import pytest
from operator_support import (
    cli_json,
    full_sync,
    item,
    on_hand,
    running,
    shop,
    write_config,
)
from structlog.testing import capture_logs

Capture = pytest.CaptureFixture[str]


def test_a_configured_warehouse_missing_in_accurate_is_reported_and_skipped(
    tmp_path: Path, capsys: Capture
) -> None:
    """GDG-9 does not exist: the daemon starts, logs `warehouse_missing`,
    pushes nothing to the Forstok warehouse it feeds (a partial sum would be
    wrong), and keeps pushing the others."""
    warehouses = [
        {"accurate": "GDG-1", "forstok_id": 1},
        {"accurate": "GDG-9", "forstok_id": 1},
        {"accurate": "GDG-2", "forstok_id": 2},
    ]
    with running(shop(item("A", 4, 5))) as sim:
        path = write_config(sim, tmp_path, warehouses=warehouses)
        with capture_logs() as logs:
            full_sync(path)

        assert on_hand(sim, 1) == {}
        assert on_hand(sim, 2) == {"A": 5}
        missing = [e for e in logs if e["event"] == "warehouse_missing"]
        assert missing[0]["warehouse"] == "GDG-9"
        assert missing[0]["log_level"] == "error"

        report = cli_json(capsys, path, "mapping")
        assert report["unknown_warehouses"] == [
            {
                "accurate": "GDG-9",
                "accurate_id": None,
                "forstok_id": 1,
                "status": "not found in Accurate",
            }
        ]
        assert report["mapped"][0]["forstok_warehouses"] == [2]


def test_renamed_and_suspended_warehouses_stop_being_pushed(
    tmp_path: Path, capsys: Capture
) -> None:
    """A warehouse renamed in Accurate is missing at the next full sync: its
    stock stops reaching Forstok and the report shows the new name as not
    configured; a suspended warehouse is reported as suspended."""
    with running(shop(item("A", 4, 5))) as sim:
        path = write_config(sim, tmp_path)
        full_sync(path)
        assert (on_hand(sim, 1), on_hand(sim, 2)) == ({"A": 4}, {"A": 5})

        with sim.lock:
            sim.accurate.warehouse_by_name("GDG-2").name = "GDG-2 BARU"
            sim.accurate.warehouse_by_name("GDG-1").suspended = True
        sim.accurate.adjust_stock_to("A", "GDG-2 BARU", 1)
        full_sync(path)

        assert (on_hand(sim, 1), on_hand(sim, 2)) == ({"A": 4}, {"A": 5})
        report = cli_json(capsys, path, "mapping")
        assert {w["accurate"]: w["status"] for w in report["unknown_warehouses"]} == {
            "GDG-1": "suspended in Accurate",
            "GDG-2": "not found in Accurate",
        }
        assert "GDG-2 BARU" in report["accurate_warehouses_not_configured"]
        assert report["summary"]["unknown_warehouses"] == 2
