"""The command line as a new user meets it: version, help, pipes, unknown
SKUs, a full sync Forstok refused, and `full-sync --repush`.

Commands run through `daemon.cli.main` (or as a real process where the
process boundary is the point) against the simulator and a real state file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from daemon_support import REPO
from operator_support import (
    cli,
    cli_json,
    full_sync,
    item,
    running,
    shop,
    write_config,
)

from daemon import cli as cli_module
from daemon.cli import EX_DATAERR, EX_PIPE, EX_UNAVAILABLE, EX_USAGE, main
from daemon.simulator.app import Simulator

Capture = pytest.CaptureFixture[str]


def test_version_names_the_installed_release(capsys: Capture) -> None:
    """`stocksync --version` prints the package's version and exits 0."""
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])

    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip().startswith("stocksync 0.")


def test_no_command_prints_help_to_stderr(capsys: Capture) -> None:
    """`stocksync` alone is a usage error: help on stderr, nothing on
    stdout, exit status 64."""
    code = main([])

    out, err = capsys.readouterr()
    assert code == EX_USAGE
    assert out == ""
    assert "usage: stocksync" in err
    assert "full-sync" in err


def test_every_option_and_argument_has_help() -> None:
    """Each command's options and arguments say what they do in --help."""
    missing = []
    for name, parser in _parsers(cli_module._parser(), "stocksync"):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {action.dest}")

    assert missing == []


def test_mapping_import_help_lists_the_csv_columns(capsys: Capture) -> None:
    """`stocksync mapping import --help` names every overrides column."""
    with pytest.raises(SystemExit):
        main(["mapping", "import", "--help"])

    text = capsys.readouterr().out
    for column in ("accurate_item_no", "forstok_sku", "pack_size", "exclude"):
        assert column in text


def test_status_into_a_closed_pipe_ends_quietly(sim: Simulator, tmp_path: Path) -> None:
    """`stocksync status | head` whose reader has gone: no traceback, and the
    exit status a shell gives a command ended by SIGPIPE."""
    config = write_config(sim, tmp_path)
    full_sync(config)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte
    try:
        done = subprocess.run(
            [sys.executable, "-m", "daemon", "status", "--config", str(config)],
            cwd=REPO,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)

    assert done.returncode == EX_PIPE
    assert b"Traceback" not in done.stderr
    assert b"BrokenPipeError" not in done.stderr


def test_history_and_retry_say_when_nothing_matches(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """A SKU that matches no mapped SKU, pushed SKU or Accurate item is named
    as unknown, with exit status 65; a known SKU with nothing to retry says
    that instead."""
    config = write_config(sim, tmp_path)
    full_sync(config)

    history = cli(capsys, config, "history", "NO-SUCH-SKU")
    report = cli(capsys, config, "history", "NO-SUCH-SKU", "--json")
    retry = cli(capsys, config, "retry", "NO-SUCH-SKU")
    known = cli(capsys, config, "retry", "sku-001")

    assert history[0] == EX_DATAERR
    assert "no Forstok SKU or Accurate item matches 'NO-SUCH-SKU'" in history[1]
    assert (report[0], '"match": "unknown"' in report[1]) == (EX_DATAERR, True)
    assert retry[0] == EX_DATAERR
    assert "no Forstok SKU or Accurate item matches 'NO-SUCH-SKU'" in retry[2]
    assert known[0] == 0
    assert "nothing to retry for 'sku-001'" in known[1]


def test_full_sync_refused_by_forstok_is_not_ok(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """With Forstok refusing the credentials, a full sync reads everything
    but is recorded as `pushes_not_sent` and exits 69; status shows that
    pushes are paused, since when and until when."""
    config = write_config(sim, tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["forstok"]["secret_key"] = "wrong-forstok-secret-7d2e5b"
    config.write_text(yaml.safe_dump(raw))

    code, _, err = cli(capsys, config, "full-sync")
    report = cli_json(capsys, config, "status")
    _, text, _ = cli(capsys, config, "status")

    assert code == EX_UNAVAILABLE
    assert "pushes not sent" in err
    run = report["last_full_sync"]
    assert run["outcome"] == "pushes_not_sent"
    assert run["counts"]["pairs_read"] > 0
    assert run["counts"]["pushed"] == 0
    assert "forstok_credentials_rejected" in run["error"]
    problem = report["push_problem"]
    assert problem["event"] == "forstok_credentials_rejected"
    assert problem["until"] > problem["since"]
    assert report["pushes_waiting"] == 12
    assert "pushes not sent" in text
    assert "Forstok refused the credentials since" in text
    assert "paused until" in text
    assert sim.forstok.on_hand_snapshot() == {}


def test_dry_run_counts_what_it_would_have_pushed(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """A dry-run full sync counts the pushes it logged instead of sending."""
    config = write_config(sim, tmp_path)

    counts = cli_json(capsys, config, "full-sync", "--dry-run")

    assert (counts["pushed"], counts["would_push"], counts["dry_run"]) == (0, 12, True)


def test_repush_corrects_values_changed_by_hand_in_forstok(
    tmp_path: Path, capsys: Capture
) -> None:
    """A normal full sync cannot see a value changed by hand in Forstok (it
    has no read API), so it leaves it; `full-sync --repush` sends every
    mapped pair once, through the ordinary push, and Forstok is right again,
    including a pair whose stock is absent from Accurate's lists."""
    with running(shop(item("CHAIR", gdg1=5, gdg2=3), item("EMPTY", gdg2=2))) as sim:
        config = write_config(sim, tmp_path)
        assert cli(capsys, config, "full-sync")[0] == 0
        sim.forstok.apply("CHAIR", 1, 40)  # an operator in Forstok's screens
        sim.forstok.apply("EMPTY", 1, 9)

        assert cli(capsys, config, "full-sync")[0] == 0
        untouched = sim.forstok.on_hand_snapshot()
        before = len(sim.forstok.history_of())
        code, out, _ = cli(capsys, config, "full-sync", "--repush")
        sent = sim.forstok.history_of()[before:]
        history = cli_json(capsys, config, "history", "CHAIR")
        refused = cli(capsys, config, "full-sync", "--repush", "--dry-run")

        assert (untouched[("CHAIR", 1)], untouched[("EMPTY", 1)]) == (40, 9)
        assert code == 0
        assert "4 pushed" in out
        assert sim.forstok.on_hand_snapshot() == {
            ("CHAIR", 1): 5,
            ("CHAIR", 2): 3,
            ("EMPTY", 1): 0,
            ("EMPTY", 2): 2,
        }
        assert sorted((p.sku, p.warehouse_id) for p in sent) == [
            ("CHAIR", 1),
            ("CHAIR", 2),
            ("EMPTY", 1),
            ("EMPTY", 2),
        ]
        latest = next(p for p in history["pushes"] if p["warehouse"] == 1)
        assert (latest["old"], latest["new"], latest["outcome"]) == (5, 5, "pushed")
        assert refused[0] == EX_USAGE


def _parsers(
    parser: argparse.ArgumentParser, name: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    """A parser and all its subcommands' parsers, with their command lines."""
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found += _parsers(sub, f"{name} {sub_name}")
    return found
