"""Configuration files and values that used to crash or mislead.

A config file stocksync cannot read (not UTF-8, a directory, no permission)
is a configuration error, exit 78, naming the file and the fix, never a
traceback. A `${VAR}` that is set but empty is reported as exactly that,
naming the variable and never its value. `percent` takes 0 to 100, and its
message says so for every refused value.
"""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from daemon_support import REPO
from test_config import ENV, GOOD, problems, write

from daemon.config import load_settings
from daemon.errors import ConfigError
from daemon.mapping import offered_quantity

pytestmark = pytest.mark.timeout(60)

AS_ROOT = os.geteuid() == 0


def stocksync(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--config", str(config)],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def file_problem(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, ENV)
    (problem,) = caught.value.problems
    return problem


# -- files that cannot be read -------------------------------------------------


def test_latin1_config_names_file_line_and_fix(tmp_path: Path) -> None:
    text = GOOD.replace('user_id: "1001"', 'user_id: "Jos\xe9"')
    path = tmp_path / "config.yaml"
    path.write_bytes(text.encode("latin-1"))
    line = 1 + text[: text.index("Jos\xe9")].count("\n")

    result = stocksync(path, ENV)

    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr
    assert f"line {line}," in result.stderr
    assert "save the file as UTF-8" in result.stderr
    assert "\xe9" not in result.stderr  # the bytes themselves are never shown


def test_not_utf8_names_the_byte_position(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"accurate:\n  api_token: ab\xff\n")

    problem = file_problem(path)

    assert problem.startswith(f"{path}: not UTF-8 text (byte 26, line 2, column 16)")


def test_directory_as_config_is_a_config_error(tmp_path: Path) -> None:
    result = stocksync(tmp_path, ENV)

    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{tmp_path}: cannot read (it is a directory)" in result.stderr


def test_missing_config_names_the_option(tmp_path: Path) -> None:
    problem = file_problem(tmp_path / "nope.yaml")

    assert "No such file" in problem
    assert "--config" in problem


@pytest.mark.skipif(AS_ROOT, reason="root ignores permission bits")
def test_unreadable_config_names_file_and_fix(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    path.chmod(0o000)
    try:
        result = stocksync(path, ENV)
    finally:
        path.chmod(0o600)

    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{path}: cannot read (permission denied)" in result.stderr
    assert "read access" in result.stderr


# -- empty and unreadable secrets ----------------------------------------------


def test_empty_variable_is_named_as_set_but_empty(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD, {**ENV, "FORSTOK_KEY": ""})

    (problem,) = found
    assert problem.startswith("forstok.secret_key: ${FORSTOK_KEY} is set but empty")
    assert "export FORSTOK_KEY" in problem
    assert "***" not in problem
    assert "non-empty string" not in problem


def test_blank_variable_counts_as_empty_and_is_not_shown(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD, {**ENV, "ACC_SECRET": "   "})

    assert found == [
        "accurate.signature_secret: ${ACC_SECRET} is set but empty: export "
        "ACC_SECRET with the value, or unset it to use the systemd credential "
        "of that name"
    ]


def test_empty_variable_in_a_path_is_refused(tmp_path: Path) -> None:
    """`${STATE_DIRECTORY}/state.sqlite3` with it empty would be
    /state.sqlite3: refused, not silently used."""
    text = GOOD.replace("state_path: state.sqlite3", "state_path: ${SD}/s.sqlite3")

    found = problems(tmp_path, text, {**ENV, "SD": ""})

    assert found == [
        "state_path: ${SD} is set but empty: export SD with the value, or unset "
        "it to use the systemd credential of that name"
    ]


def test_empty_credential_file_is_named(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "FORSTOK_KEY").write_text("\n")
    env = {**ENV, "CREDENTIALS_DIRECTORY": str(credentials)}
    del env["FORSTOK_KEY"]

    (problem,) = problems(tmp_path, GOOD, env)

    assert problem == (
        "forstok.secret_key: ${FORSTOK_KEY}: the systemd credential FORSTOK_KEY "
        "is empty: write the value in it"
    )


def test_credential_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "FORSTOK_KEY").write_bytes(b"k\xe9y-value")
    env = {**ENV, "CREDENTIALS_DIRECTORY": str(credentials)}
    del env["FORSTOK_KEY"]

    (problem,) = problems(tmp_path, GOOD, env)

    assert "the systemd credential FORSTOK_KEY is not UTF-8" in problem
    assert "y-value" not in problem


# -- percent ---------------------------------------------------------------------


def test_percent_zero_is_accepted_and_offers_nothing(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD.replace("50", "0")), ENV)

    rules = settings.warehouses[1].rules
    assert rules.percent == 0
    assert offered_quantity([Decimal(120)], Decimal(1), rules) == 0


@pytest.mark.parametrize("value", ["150", "-1", "100.5", ".nan", ".inf", "half"])
def test_percent_out_of_range_states_the_real_range(tmp_path: Path, value: str) -> None:
    text = GOOD.replace("percent: 50", f"percent: {value}")

    (problem,) = problems(tmp_path, text)

    assert problem.startswith(
        "warehouses[1].percent: expected a percentage from 0 to 100"
    ), problem


@pytest.mark.parametrize("value", ["0", "0.5", "100"])
def test_percent_bounds_are_inclusive(tmp_path: Path, value: str) -> None:
    settings = load_settings(write(tmp_path, GOOD.replace("50", value)), ENV)

    assert settings.warehouses[1].rules.percent == float(value)
