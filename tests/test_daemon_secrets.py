"""Secrets stay secret: in logs, error messages and `status`, in real processes.

Each scenario runs stocksync as its own process, captures everything it
writes, and searches that for every secret it was given. The harness also
searches every test's captured output for the test secrets.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_support import REPO, DaemonProcess, Daemons, daemon_config
from harness import SCANNED_SECRETS

from daemon.simulator.app import Simulator

pytestmark = pytest.mark.timeout(60)

WRONG_ACCURATE_TOKEN = "wrong-accurate-token-4f1c9a"
WRONG_FORSTOK_SECRET = "wrong-forstok-secret-7d2e5b"
CREDENTIALS = {
    "ACCURATE_API_TOKEN": ("accurate", "api_token"),
    "ACCURATE_SIGNATURE_SECRET": ("accurate", "signature_secret"),
    "FORSTOK_USER_ID": ("forstok", "user_id"),
    "FORSTOK_SECRET_KEY": ("forstok", "secret_key"),
}


def assert_no_secret(text: str) -> None:
    for secret in SCANNED_SECRETS:
        assert secret not in text, f"{secret[:4]}… appears in the output"


def edit_config(config: Path, change: dict[str, dict[str, Any]]) -> None:
    raw = yaml.safe_load(config.read_text())
    for section, values in change.items():
        raw[section].update(values)
    config.write_text(yaml.safe_dump(raw))


def stocksync(*args: str) -> subprocess.CompletedProcess[str]:
    """An operator command, run as its own process; its output is printed for
    the harness's secret check."""
    result = subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    print(result.stdout, result.stderr)
    return result


def test_credentials_from_systemd_with_a_world_readable_config(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """The documented set-up: config.yaml (0644) holds only ${NAME}
    references, each read from $CREDENTIALS_DIRECTORY; state goes under
    $STATE_DIRECTORY. The daemon syncs, logs no secret, and does not warn."""
    config = daemon_config(sim, tmp_path)
    raw = yaml.safe_load(config.read_text())
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    for name, (section, key) in CREDENTIALS.items():
        (credentials / name).write_text(str(raw[section][key]))
        (credentials / name).chmod(0o400)
        raw[section][key] = "${" + name + "}"
    raw["state_path"] = "${STATE_DIRECTORY}/state.sqlite3"
    config.write_text(yaml.safe_dump(raw))
    config.chmod(0o644)
    (tmp_path / "state").mkdir()

    daemon = daemons.start(
        config,
        env={
            "CREDENTIALS_DIRECTORY": str(credentials),
            "STATE_DIRECTORY": str(tmp_path / "state"),
        },
    )
    daemon.wait_for("full_sync_finished")
    assert daemon.stop() == 0

    assert (tmp_path / "state" / "state.sqlite3").exists()
    assert not daemon.find("config_world_readable")
    assert_no_secret(daemon.output())


def test_world_readable_config_holding_a_secret_is_warned_about(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """Literal secrets in a config others can read: a warning naming the file
    and what to do, without the secrets themselves."""
    config = daemon_config(sim, tmp_path)
    config.chmod(0o644)

    daemon = daemons.start(config)
    daemon.wait_for("poll_finished")
    assert daemon.stop() == 0

    (warning,) = daemon.find("config_world_readable")
    assert warning["level"] == "warning"
    assert warning["path"] == str(config)
    assert "chmod 600" in warning["action"]
    assert_no_secret(daemon.output())


@pytest.mark.parametrize(
    ("change", "event"),
    [
        (
            {"accurate": {"api_token": WRONG_ACCURATE_TOKEN}},
            "accurate_credentials_rejected",
        ),
        (
            {"forstok": {"secret_key": WRONG_FORSTOK_SECRET}},
            "forstok_credentials_rejected",
        ),
    ],
    ids=["accurate", "forstok"],
)
def test_refused_credentials_are_reported_without_showing_them(
    sim: Simulator,
    tmp_path: Path,
    daemons: Daemons,
    change: dict[str, dict[str, Any]],
    event: str,
) -> None:
    """A refused token or key is reported, with what to do, but never shown:
    neither the wrong value the daemon holds nor the right one."""
    config = daemon_config(sim, tmp_path)
    edit_config(config, change)

    daemon: DaemonProcess = daemons.start(config)
    report = daemon.wait_for(event)
    assert daemon.running
    assert daemon.stop() == 0

    assert report["level"] == "error"
    assert report["action"]
    assert_no_secret(daemon.output())


@pytest.mark.parametrize(
    "text",
    [
        'forstok:\n  user_id: "1001"\n  secret_key: "sim-forstok-secret-key\n',
        "forstok:\n  secret_key: sim-forstok-secret-key: x\n",
        "accurate:\n  api_token: [sim-accurate-api-token]\nstate_path: s\n",
        "accurate:\n  api_tokn: sim-accurate-api-token\nstate_path: s\n",
    ],
    ids=["unterminated-quote", "stray-colon", "wrong-type", "misspelt-key"],
)
def test_config_errors_never_quote_a_secret(tmp_path: Path, text: str) -> None:
    """A broken config exits 78 naming the problem and its place, but PyYAML's
    quoted line or the offending value never reaches the message."""
    config = tmp_path / "config.yaml"
    config.write_text(text)
    config.chmod(0o600)

    result = stocksync("run", "--config", str(config))

    assert result.returncode == 78
    assert "invalid configuration" in result.stderr
    assert_no_secret(result.stdout + result.stderr)


def test_status_output_never_shows_a_secret(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """`stocksync status`, in text and JSON, while the daemon runs."""
    config = daemon_config(sim, tmp_path)
    daemon = daemons.start(config)
    daemon.wait_for("full_sync_finished")

    text = stocksync("status", "--config", str(config))
    as_json = stocksync("status", "--json", "--config", str(config))
    assert daemon.stop() == 0

    assert text.returncode == as_json.returncode == 0
    assert str(daemon.pid) in as_json.stdout
    assert_no_secret(text.stdout + text.stderr + as_json.stdout + as_json.stderr)
