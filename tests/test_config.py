"""Configuration: every problem reported together, each naming its key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import Secret, load_settings, parse_duration
from daemon.errors import ConfigError

GOOD = """
accurate:
  api_token: ${ACC_TOKEN}
  signature_secret: ${ACC_SECRET}
forstok:
  user_id: "1001"
  secret_key: ${FORSTOK_KEY}
warehouses:
  - accurate: GDG-1
    forstok_id: 1
  - accurate: GDG-2
    forstok_id: 2
    buffer: 2
    percent: 50
sync:
  poll_interval: 5s
  lookback: 5m
state_path: state.sqlite3
"""

ENV = {
    "ACC_TOKEN": "token-value",
    "ACC_SECRET": "secret-value",
    "FORSTOK_KEY": "k-123456",
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), ENV if env is None else env)
    return caught.value.problems


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), ENV)

    assert settings.accurate.requests_per_second == 8
    assert settings.accurate.timezone == "Asia/Jakarta"
    assert settings.forstok.batch_size == 20
    assert settings.sync.poll_interval == 5
    assert settings.sync.lookback == 300
    assert settings.warehouses[1].rules.buffer == 2
    assert settings.state_path == tmp_path / "state.sqlite3"
    assert settings.accurate.api_token == Secret("token-value")


def test_secrets_never_show_in_repr(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), ENV)

    assert "secret-value" not in repr(settings)
    assert "k-123456" not in repr(settings)


def test_missing_key_names_the_key(tmp_path: Path) -> None:
    text = GOOD.replace('  user_id: "1001"\n', "")

    assert any(p.startswith("forstok.user_id:") for p in problems(tmp_path, text))


def test_wrong_type_names_the_key_and_the_value(tmp_path: Path) -> None:
    text = GOOD.replace("poll_interval: 5s", "poll_interval: soon")

    (problem,) = problems(tmp_path, text)
    assert problem.startswith("sync.poll_interval:")
    assert "'soon'" in problem


def test_forstok_warehouse_id_must_be_a_whole_number(tmp_path: Path) -> None:
    text = GOOD.replace("forstok_id: 2", "forstok_id: 2.5")

    (problem,) = problems(tmp_path, text)
    assert problem.startswith("warehouses[1].forstok_id:")


def test_unresolved_reference_names_key_and_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in ENV.items() if k != "FORSTOK_KEY"}

    (problem,) = problems(tmp_path, GOOD, env)
    assert problem.startswith("forstok.secret_key:")
    assert "FORSTOK_KEY" in problem


def test_reference_resolves_from_systemd_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "FORSTOK_KEY").write_text("from-credential\n", encoding="utf-8")
    env = {k: v for k, v in ENV.items() if k != "FORSTOK_KEY"}
    env["CREDENTIALS_DIRECTORY"] = str(creds)

    settings = load_settings(write(tmp_path, GOOD), env)

    assert settings.forstok.secret_key.reveal() == "from-credential"


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    text = GOOD.replace("forstok_id: 1", "forstok_id: one").replace(
        "lookback: 5m", "lookback: -1"
    )

    found = problems(tmp_path, text)
    assert {p.split(":")[0] for p in found} == {
        "warehouses[0].forstok_id",
        "sync.lookback",
    }


def test_durations() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("5m") == 300
    assert parse_duration(2) == 2
    with pytest.raises(ValueError, match="duration"):
        parse_duration("five")


def test_bad_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("forstok_id: 2", "forstok_id: WH-2"))

    done = subprocess.run(
        [sys.executable, "-m", "daemon", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )

    assert done.returncode == 78
    assert "warehouses[1].forstok_id" in done.stderr


def test_shipped_example_config_is_valid() -> None:
    """The commented config.yaml a merchant starts from loads as it is."""
    env = {
        "ACCURATE_API_TOKEN": "t" * 10,
        "ACCURATE_SIGNATURE_SECRET": "s" * 10,
        "FORSTOK_USER_ID": "1001",
        "FORSTOK_SECRET_KEY": "f" * 10,
        "STATE_DIRECTORY": "/var/lib/stocksync",
    }

    settings = load_settings(Path(__file__).parent.parent / "config.yaml", env)

    assert {w.forstok_id for w in settings.warehouses} == {1234, 5678}


def test_warehouses_feeding_one_target_must_share_rules(tmp_path: Path) -> None:
    text = GOOD.replace("forstok_id: 2\n", "forstok_id: 1\n")

    (problem,) = problems(tmp_path, text)
    assert problem.startswith("warehouses[1]:")
    assert "same Forstok warehouse 1" in problem


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("poll_interval: 5s", "pol_interval: 5s", "sync.pol_interval"),
        ("    buffer: 2", "    bufer: 2", "warehouses[1].bufer"),
        ("  signature_secret:", "  signature_secrt:", "accurate.signature_secrt"),
    ],
)
def test_misspelt_keys_are_reported_with_a_suggestion(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    """A misspelt `buffer` would silently offer more stock: refuse it."""
    found = problems(tmp_path, GOOD.replace(old, new))

    assert any(p.startswith(f"{key}: unknown key; did you mean") for p in found)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD + "synk:\n  poll_interval: 5s\n")

    assert any(p.startswith("synk: unknown key") for p in found)
