"""Per-pair push history and dry run: every push is recorded with its old and
new value, the reason and the outcome, kept `sync.history_days`; a dry run
records what it would send and sends nothing to Forstok."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from operator_support import (
    cli,
    cli_json,
    full_sync,
    item,
    on_hand,
    poll,
    running,
    shop,
    write_config,
    write_csv,
)

from daemon.simulator.accurate import LineSpec

Capture = pytest.CaptureFixture[str]


@pytest.mark.parametrize("switch", ["config", "flag"])
def test_dry_run_sends_nothing_and_history_shows_what_it_would_have(
    tmp_path: Path, capsys: Capture, switch: str
) -> None:
    """`sync.dry_run: true`, or `--dry-run`, runs the whole full sync, logs
    each push as `push_dry_run` and records it as "dry_run", while Forstok
    receives no request at all."""
    with running(shop(item("A", 4, 5), item("B", 7))) as sim:
        path = write_config(sim, tmp_path, dry_run=switch == "config")
        flag = ["--dry-run"] if switch == "flag" else []
        code, out, err = cli(capsys, path, "full-sync", *flag, "--json")

        assert code == 0, err
        assert json.loads(out)["dry_run"] is True
        assert sim.requests.count("forstok") == 0
        assert sim.forstok.on_hand_snapshot() == {}
        logged = [json.loads(line) for line in err.splitlines() if line[:1] == "{"]
        would = {
            (e["sku"], e["warehouse"], e["quantity"])
            for e in logged
            if e["event"] == "push_dry_run"
        }
        assert would == {("A", 1, 4), ("A", 2, 5), ("B", 1, 7), ("B", 2, 0)}

        history = cli_json(capsys, path, "history", "A")
        assert {
            (p["warehouse"], p["old"], p["new"], p["outcome"])
            for p in history["pushes"]
        } == {
            (1, None, 4, "dry_run"),
            (2, None, 5, "dry_run"),
        }


def test_history_records_old_new_reason_and_outcome(
    tmp_path: Path, capsys: Capture
) -> None:
    """Each push names the document that caused it, or the full sync, with
    the value Forstok held before and the one sent, newest first."""
    with running(shop(item("A", 4, 5), item("B", 1))) as sim:
        path = write_config(sim, tmp_path)
        full_sync(path)
        poll(path)  # start the cursors
        invoice = sim.accurate.create_document(
            "sales-invoice", [LineSpec("A", 1, "GDG-1")]
        )
        poll(path)

        history = cli_json(capsys, path, "history", "A")

        assert history["skus"] == ["A"]
        assert history["retention_days"] == 30
        latest, *older = history["pushes"]
        assert (latest["warehouse"], latest["old"], latest["new"]) == (1, 4, 3)
        assert latest["reason"] == f"sales_invoice {invoice.number}"
        assert latest["outcome"] == "pushed"
        assert {(p["warehouse"], p["old"], p["new"], p["reason"]) for p in older} == {
            (1, None, 4, "full sync"),
            (2, None, 5, "full sync"),
        }


def test_history_finds_a_sku_by_its_accurate_number_in_any_spelling(
    tmp_path: Path, capsys: Capture
) -> None:
    """`stocksync history` accepts the Accurate item number, matched through
    the SKU normalisation, and shows the pushes to its Forstok SKU."""
    with running(shop(item("Chair-01", 2))) as sim:
        path = write_config(sim, tmp_path)
        mapping = write_csv(
            tmp_path / "m.csv", "accurate_item_no,forstok_sku\nChair-01,KURSI-01\n"
        )
        cli(capsys, path, "mapping", "import", str(mapping))
        full_sync(path)

        history = cli_json(capsys, path, "history", " CHAIR-01")

        assert history["skus"] == ["KURSI-01"]
        pushes = {(p["sku"], p["warehouse"], p["new"]) for p in history["pushes"]}
        assert pushes == {("KURSI-01", 1, 2), ("KURSI-01", 2, 0)}
        code, out, _ = cli(capsys, path, "history", "KURSI-01")
        assert code == 0
        assert out.splitlines()[1].split() == [
            "at",
            "sku",
            "warehouse",
            "old",
            "new",
            "outcome",
            "reason",
        ]


def test_history_older_than_the_retention_is_pruned(
    tmp_path: Path, capsys: Capture
) -> None:
    """The full sync deletes history older than `sync.history_days`."""
    with running(shop(item("A", 4))) as sim:
        path = write_config(sim, tmp_path, history_days=7)
        full_sync(path)
        old = (datetime.now(UTC) - timedelta(days=8)).isoformat()
        with sqlite3.connect(tmp_path / "state.sqlite3") as db:
            db.execute(
                "INSERT INTO history (at, sku, forstok_warehouse, old, new, reason, "
                "outcome) VALUES (?, 'A', 1, 1, 2, 'sales_invoice SI-OLD', 'pushed')",
                (old,),
            )
        db.close()
        assert len(cli_json(capsys, path, "history", "A")["pushes"]) == 3

        full_sync(path)

        reasons = [
            p["reason"] for p in cli_json(capsys, path, "history", "A")["pushes"]
        ]
        assert reasons == ["full sync", "full sync"]
        assert on_hand(sim, 1) == {"A": 4}
