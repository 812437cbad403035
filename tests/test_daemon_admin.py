"""`systemd/stocksync-admin` runs operator commands as the service itself.

The script is run for real with a stand-in `systemd-run` on PATH that prints
its arguments; the transient unit it asks for must match the service unit
in everything that decides file ownership and secrets.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
from test_systemd_unit import ADMIN, SINGLE, TEMPLATE, parse_unit

pytestmark = pytest.mark.timeout(20)

STAND_IN = '#!/bin/sh\nfor arg in "$@"; do printf "%s\\n" "$arg"; done\n'


def run_admin(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "systemd-run").write_text(STAND_IN)
    (stub / "systemd-run").chmod(0o755)
    return subprocess.run(
        ["bash", str(ADMIN), *args],
        env={**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=False,
    )


def requested(output: str) -> tuple[dict[str, list[str]], list[str]]:
    """The transient unit's properties, and the command it runs."""
    lines = output.splitlines()
    properties: dict[str, list[str]] = {}
    index = 0
    while index < len(lines):
        if lines[index] == "-p":
            key, _, value = lines[index + 1].partition("=")
            properties.setdefault(key, []).append(value)
            index += 2
        elif lines[index].startswith("--"):
            index += 1
        else:
            break
    return properties, lines[index:]


@pytest.mark.parametrize(
    ("unit", "prefix", "instance"),
    [(SINGLE, [], ""), (TEMPLATE, ["@acme"], "acme")],
    ids=["single", "template"],
)
def test_admin_runs_commands_as_the_units_user_with_its_files(
    tmp_path: Path, unit: Path, prefix: list[str], instance: str
) -> None:
    """Same user name, state directory, config file and credentials as the
    unit, and the same program the unit starts."""
    service = parse_unit(unit)["Service"]

    def expand(value: str) -> str:
        return value.replace("%i", instance)

    result = run_admin(tmp_path, *prefix, "status", "--json")
    properties, command = requested(result.stdout)

    assert result.returncode == 0, result.stderr
    assert properties["User"] == [expand(service["User"][0])]
    assert properties["StateDirectory"] == [expand(service["StateDirectory"][0])]
    assert properties["DynamicUser"] == ["yes"]
    assert properties["UMask"] == service["UMask"]
    assert properties["LoadCredential"] == [
        expand(v) for v in service["LoadCredential"]
    ]
    exec_start = shlex.split(expand(service["ExecStart"][0]))
    config = exec_start[exec_start.index("--config") + 1]
    assert f"STOCKSYNC_CONFIG={config}" in properties["Environment"][0].split()
    assert command == [*exec_start[: exec_start.index("run")], "status", "--json"]


def test_admin_refuses_to_start_a_second_daemon(tmp_path: Path) -> None:
    """`stocksync-admin run` would only meet the service's lock: it says so."""
    result = run_admin(tmp_path, "@acme", "run")

    assert result.returncode == 64
    assert "systemctl start stocksync@acme" in result.stderr
    assert result.stdout == ""


def test_admin_without_a_command_prints_usage(tmp_path: Path) -> None:
    result = run_admin(tmp_path)

    assert result.returncode == 64
    assert result.stderr.startswith("usage: stocksync-admin")


def test_admin_script_is_executable() -> None:
    """Installed with `install -m 0755`, and runnable from the checkout too."""
    assert ADMIN.stat().st_mode & stat.S_IXUSR
    assert ADMIN.read_text().startswith("#!/bin/bash\n")
