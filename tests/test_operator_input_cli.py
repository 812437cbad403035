"""What the command line answers to input it cannot use, and whether what it
prints matches what happened: usage errors exit 64, `history --limit`,
cursors of kinds without documents, reports before the first run, `retry`
wording and `stocksync simulate --help`.

Commands run through `daemon.cli.main`, or as a real process where the exit
status of the process is the point, against the simulator and a real state.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from daemon_support import REPO
from operator_support import (
    cli,
    cli_json,
    full_sync,
    item,
    poll,
    running,
    shop,
    write_config,
)

from daemon.cli import EX_USAGE, main
from daemon.simulator import cli as simulator_cli
from daemon.simulator.accurate import LineSpec
from daemon.simulator.app import Simulator
from daemon.simulator.faults import FaultAction, FaultPlan, FaultRule

Capture = pytest.CaptureFixture[str]


# -- usage errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["status", "--bogus"], "unrecognized arguments: --bogus"),
        (["history"], "the following arguments are required: SKU"),
        (["mapping", "import"], "the following arguments are required: FILE"),
        (["history", "A", "--limit", "0"], "'0' is not a whole number above 0"),
        (["history", "A", "--limit", "-3"], "'-3' is not a whole number above 0"),
        (["history", "A", "--limit", "ten"], "'ten' is not a whole number above 0"),
        (["simulate", "--port-file", "p.json", "--items", "many"], "'many'"),
    ],
)
def test_usage_errors_exit_64_with_the_usage_on_stderr(
    args: list[str], said: str, capsys: Capture
) -> None:
    """Every usage error exits 64 (EX_USAGE), as the README says, not
    argparse's 2; stderr says what was wrong, stdout stays empty."""
    with pytest.raises(SystemExit) as stopped:
        main(args)

    out, err = capsys.readouterr()
    assert stopped.value.code == EX_USAGE
    assert out == ""
    assert "usage: stocksync" in err
    assert said in err


def test_a_usage_error_is_exit_status_64_of_the_process(tmp_path: Path) -> None:
    """The status a shell or systemd sees, from the real process."""
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--no-such-option"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (done.returncode, done.stdout) == (EX_USAGE, "")
    assert "unrecognized arguments: --no-such-option" in done.stderr


# -- history --limit ------------------------------------------------------------------


def test_history_limit_shows_the_n_newest_pushes(
    tmp_path: Path, capsys: Capture
) -> None:
    """`--limit 1` keeps the newest push only; the oldest are the ones left
    out, never the newest."""
    with running(shop(item("A", 4, 5))) as sim:
        path = write_config(sim, tmp_path)
        full_sync(path)
        poll(path)
        sim.accurate.create_document("sales-invoice", [LineSpec("A", 1, "GDG-1")])
        poll(path)

        every = cli_json(capsys, path, "history", "A")["pushes"]
        newest = cli_json(capsys, path, "history", "A", "--limit", "1")["pushes"]

    assert len(every) == 3
    assert newest == every[:1]
    assert (newest[0]["old"], newest[0]["new"]) == (4, 3)


# -- status: cursors of kinds without documents ------------------------------------


def test_a_kind_without_documents_shows_so_not_a_cursor_from_2000(
    tmp_path: Path, capsys: Capture
) -> None:
    """Before Accurate has a sales invoice, its cursor is a placeholder: no
    age of decades, `no documents yet`; after the first one, a real age."""
    with running(shop(item("A", 4))) as sim:
        path = write_config(sim, tmp_path)
        full_sync(path)
        poll(path)

        cursors = _cursors(cli_json(capsys, path, "status"))
        code, text, _ = cli(capsys, path, "status")

        assert cursors["sales_invoice"]["no_documents_yet"] is True
        assert cursors["sales_invoice"]["age_s"] is None
        assert code == 0
        assert "01/01/2000" not in text
        assert " d\n" not in text  # no age counted in days
        row = next(line for line in text.splitlines() if line.startswith("sales_"))
        assert row.split()[1:] == ["no", "documents", "yet", "-"]

        sim.accurate.create_document("sales-invoice", [LineSpec("A", 1, "GDG-1")])
        poll(path)
        invoice = _cursors(cli_json(capsys, path, "status"))["sales_invoice"]

    assert invoice["no_documents_yet"] is False
    assert 0 <= invoice["age_s"] < 3600


def _cursors(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["kind"]: row for row in report["cursors"]}


# -- reports before the first run ----------------------------------------------------


def test_mapping_and_history_say_the_daemon_never_ran(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """As the README says: both say so, history exits 0 (no SKU can be
    wrong yet), and no state file is created."""
    config = write_config(sim, tmp_path)

    mapping_code, mapping, _ = cli(capsys, config, "mapping")
    history_code, history, _ = cli(capsys, config, "history", "SKU-001")
    report = cli_json(capsys, config, "history", "SKU-001")

    assert mapping_code == 0
    assert mapping.startswith("no state yet: the daemon has never run\n")
    assert cli_json(capsys, config, "mapping")["state_exists"] is False
    assert history_code == 0
    assert history.strip() == (
        "no state yet: the daemon has never run: nothing was pushed for 'SKU-001' yet"
    )
    assert report["match"] == "no state"
    assert not (tmp_path / "state.sqlite3").exists()


# -- retry says what it released ------------------------------------------------------


def test_retry_names_a_row_waiting_to_retry_as_such(
    tmp_path: Path, capsys: Capture
) -> None:
    """A row Forstok rejected once backs off on its own; retry releases it
    and says so, without calling it held."""
    with running(shop(item("A", 4))) as sim:
        path = write_config(sim, tmp_path)
        full_sync(path)
        poll(path)
        reject = FaultAction("reject_sku", sku="A", message="quantity locked")
        rule = FaultRule(reject, service="forstok", endpoint="*/quantities.json")
        sim.install_faults(FaultPlan([rule]))
        sim.accurate.adjust_stock_to("A", "GDG-1", 2)
        poll(path)
        status = cli_json(capsys, path, "status")
        assert (status["pushes_held"], status["pushes_retrying"]) == (0, 1)

        code, out, _ = cli(capsys, path, "retry", "a")

    assert code == 0
    assert out.strip() == (
        "released 1 push waiting to retry; 1 item will be read again and "
        "pushed at the daemon's next poll"
    )


# -- stocksync simulate --help ---------------------------------------------------------


def test_simulate_help_names_the_command_and_every_option(capsys: Capture) -> None:
    """`stocksync simulate --help` is how the operator called it, and each
    option says what it does."""
    with pytest.raises(SystemExit) as stopped:
        main(["simulate", "--help"])

    text = capsys.readouterr().out
    assert stopped.value.code == 0
    assert text.startswith("usage: stocksync simulate ")
    assert "daemon.simulator" not in text
    parser = simulator_cli._parser("stocksync simulate")
    missing = [
        action.dest
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert missing == []
