"""Commands that act: `full-sync`, `retry`, `mapping import`, `import-forstok`.

Those that change the state work while the daemon runs and take effect in
it; `full-sync` is refused while a daemon holds the state.
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from harness import Harness, mismatches, write_config
from operator_support import (
    cli,
    cli_json,
    full_sync,
    poll,
    with_engine,
    write_csv,
)

from daemon.cli import EX_DATAERR, EX_TEMPFAIL
from daemon.lock import InstanceLock
from daemon.simulator.app import Simulator
from daemon.simulator.faults import FaultAction, FaultPlan, FaultRule
from daemon.state import PushRecord, QueuedTarget
from daemon.sync import Engine

Capture = pytest.CaptureFixture[str]


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as an operator's shell is."""

    def isatty(self) -> bool:
        return True


def test_full_sync_is_refused_while_a_daemon_holds_the_state(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """Exit 75 (EX_TEMPFAIL) naming the holder, and nothing is pushed."""
    config = write_config(sim, tmp_path)

    with InstanceLock(tmp_path / "state.sqlite3"):
        code, _, err = cli(capsys, config, "full-sync")

    assert code == EX_TEMPFAIL
    assert "pid" in err
    assert sim.requests.count("forstok") == 0


def test_full_sync_shows_progress_on_a_terminal_and_exits(
    sim: Simulator,
    tmp_path: Path,
    capsys: Capture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal the full sync draws one progress line (pages, pairs,
    rate, ETA), then prints its counts and exits; Forstok has converged."""
    config = write_config(sim, tmp_path)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)

    code, out, _ = cli(capsys, config, "full-sync")

    assert code == 0
    shown = terminal.getvalue()
    last = re.findall(r"\r(full sync [^\r\n\x1b]*)", shown)[-1]
    assert re.fullmatch(
        r"full sync 100% \(4/4 pages, 12 pairs read, 12 pushed, "
        r"[0-9.]+ pages/s, ETA 0 s\)",
        last.rstrip(),
    )
    assert shown.endswith("\n")
    assert out.startswith("full sync done: ")
    assert "12 pushed" in out
    assert mismatches(sim) == {}


def test_retry_pushes_a_rejected_row_now(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """A row Forstok rejected waits out a backoff; `stocksync retry` releases
    it, and the next poll reads the item again and pushes the current stock."""
    config = write_config(sim, tmp_path)
    full_sync(config)
    poll(config)
    reject = FaultAction("reject_sku", sku="SKU-001", message="quantity locked")
    rule = FaultRule(reject, service="forstok", endpoint="*/quantities.json", count=1)
    sim.install_faults(FaultPlan([rule]))
    sim.accurate.adjust_stock_to("SKU-001", "GDG-1", 2)
    poll(config)

    failing = cli_json(capsys, config, "status")["pushes_failing"]
    assert [(f["sku"], f["held"], f["reason"]) for f in failing] == [
        ("SKU-001", False, "quantity locked")
    ]
    poll(config)
    assert sim.forstok.on_hand("SKU-001", 1) == 11  # still backing off

    code, out, _ = cli(capsys, config, "retry")
    assert code == 0
    assert out.startswith("released 1 ")
    poll(config)

    assert sim.forstok.on_hand("SKU-001", 1) == 2
    assert cli_json(capsys, config, "status")["pushes_failing"] == []


def test_retry_requeues_a_held_push(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """A held row is never re-sent on its own; after `stocksync retry SKU`
    the daemon's next poll pushes that pair again."""
    config = write_config(sim, tmp_path)
    full_sync(config)
    sim.accurate.adjust_stock_to("SKU-002", "GDG-1", 1)

    async def hold(engine: Engine) -> None:
        # The state three rejections leave: the row held, out of the queue.
        target = QueuedTarget(0, 1, 0, "test")
        held = PushRecord(target, "SKU-002", 1, "", 12, "test", "held", "refused")
        await engine.state.record_pushes([held])

    with_engine(config, hold)
    assert cli_json(capsys, config, "status")["pushes_held"] == 1

    code, out, _ = cli(capsys, config, "retry", "sku-002")
    assert (code, out.startswith("released 1 ")) == (0, True)
    assert out.startswith("released 1 held push; 1 item will be read again")
    poll(config)

    assert sim.forstok.on_hand("SKU-002", 1) == 1
    assert cli_json(capsys, config, "status")["pushes_held"] == 0


def test_a_bad_mapping_file_is_refused_whole(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """Every problem is reported with its line, exit 65, and the overrides
    imported before stay as they were."""
    config = write_config(sim, tmp_path)
    good = write_csv(tmp_path / "good.csv", "accurate_item_no,exclude\nSKU-001,yes\n")
    assert cli(capsys, config, "mapping", "import", str(good))[0] == 0
    bad = write_csv(
        tmp_path / "bad.csv",
        "accurate_item_no,forstok_sku,pack_size,exclude\n"
        "SKU-002,X,0,\n"
        "SKU-003,Y,1,maybe\n"
        "SKU-003,Z,,\n",
    )

    code, _, err = cli(capsys, config, "mapping", "import", str(bad))

    assert code == EX_DATAERR
    assert "bad.csv:2: pack_size '0' is not a positive number" in err
    assert "bad.csv:3: exclude 'maybe' is neither yes nor no" in err
    assert "nothing imported" in err
    full_sync(config)
    excluded = cli_json(capsys, config, "mapping")["excluded"]
    assert [e["item"] for e in excluded] == ["SKU-001"]


def test_a_forstok_export_without_a_sku_column_is_refused(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """The export must have a SKU column; otherwise exit 65, nothing stored."""
    config = write_config(sim, tmp_path)
    export = write_csv(tmp_path / "export.csv", "Name,Stock\nKursi,3\n")

    code, _, err = cli(capsys, config, "mapping", "import-forstok", str(export))

    assert code == EX_DATAERR
    assert "no SKU column" in err
    assert cli_json(capsys, config, "mapping")["forstok_export"]["imported"] is False


async def test_a_mapping_import_reaches_the_running_engine(
    harness: Harness, tmp_path: Path, capsys: Capture
) -> None:
    """An import made while the engine runs is seen at its next poll: the
    remapped item is pushed under its new SKU and pack size, and an excluded
    item's later changes no longer reach Forstok."""
    engine, sim = harness.engine, harness.sim
    await engine.full_sync("test")
    await engine.poll()
    config = write_config(sim, tmp_path)
    overrides = write_csv(
        tmp_path / "m.csv",
        "accurate_item_no,forstok_sku,pack_size,exclude\n"
        "SKU-001,BOX-001,5,\n"
        "SKU-002,,,yes\n",
    )

    code, _, err = await anyio.to_thread.run_sync(
        cli, capsys, config, "mapping", "import", str(overrides)
    )
    assert code == 0, err
    sim.accurate.adjust_stock_to("SKU-002", "GDG-1", 1)
    await engine.poll()

    assert sim.forstok.on_hand("BOX-001", 1) == 11 // 5
    assert sim.forstok.on_hand("BOX-001", 2) == 5 // 5
    assert sim.forstok.on_hand("SKU-002", 1) == 12


def test_commands_work_while_the_daemon_runs(
    sim: Simulator, tmp_path: Path, capsys: Capture
) -> None:
    """With `stocksync run` in another process: status names it, full-sync is
    refused, a mapping import takes effect in it, and retry is accepted."""
    config = write_config(sim, tmp_path)
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "daemon", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: not mismatches(sim) and sim.forstok.on_hand_snapshot())

        status = cli_json(capsys, config, "status")
        assert (status["running"], status["daemon"]["pid"]) == (True, daemon.pid)
        assert cli(capsys, config, "full-sync")[0] == EX_TEMPFAIL

        overrides = write_csv(
            tmp_path / "m.csv", "accurate_item_no,forstok_sku\nSKU-003,RENAMED-3\n"
        )
        assert cli(capsys, config, "mapping", "import", str(overrides))[0] == 0
        wait_for(lambda: sim.forstok.on_hand("RENAMED-3", 1) == 13)
        assert cli(capsys, config, "retry")[0] == 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
        log.close()
    lines = (tmp_path / "daemon.log").read_text().splitlines()
    events = [json.loads(line)["event"] for line in lines if line.startswith("{")]
    assert "mapping_changed" in events


def wait_for(condition: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)
