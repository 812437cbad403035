"""The systemd units: key settings, hardening score, and the documented setup."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from daemon.config import load_settings

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent
SINGLE = REPO / "systemd" / "stocksync.service"
TEMPLATE = REPO / "systemd" / "stocksync@.service"
UNITS = [SINGLE, TEMPLATE]
ADMIN = REPO / "systemd" / "stocksync-admin"
# Where the "Run as a service" section lives before and after the merge.
DOCS = [REPO / "docs" / "operations.md", REPO / "README.md"]

CREDENTIALS = {
    "ACCURATE_API_TOKEN",
    "ACCURATE_SIGNATURE_SECRET",
    "FORSTOK_USER_ID",
    "FORSTOK_SECRET_KEY",
}
MAX_EXPOSURE = 1.5
# Settings the two units may differ in; all other lines must match, so that a
# hardening change made to one unit cannot be forgotten in the other.
PER_INSTANCE = {"Description", "ExecStart", "User", "StateDirectory", "LoadCredential"}

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """Sections of a unit file, each mapping a key to all of its values."""
    sections: Unit = {}
    current: dict[str, list[str]] = defaultdict(list)
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], defaultdict(list))
            continue
        key, _, value = line.partition("=")
        current[key.strip()].append(value.strip())
    return sections


def service(path: Path) -> dict[str, list[str]]:
    return parse_unit(path)["Service"]


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key, [])
    assert len(values) == 1, f"{key}= should be set exactly once, got {values}"
    return values[0]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min|h)?", value)
    assert match, f"unexpected time span {value!r}"
    return int(match.group(1)) * {"s": 1, "min": 60, "h": 3600}[match.group(2) or "s"]


@pytest.fixture(params=UNITS, ids=lambda p: p.name)
def unit_path(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_type_notify_accepts_only_the_main_process(unit_path: Path) -> None:
    """Type=notify with NotifyAccess=main: only the daemon itself says READY."""
    svc = service(unit_path)

    assert one(svc, "Type") == "notify"
    assert one(svc, "NotifyAccess") == "main"


def test_reload_sends_sighup_to_the_main_process(unit_path: Path) -> None:
    """`systemctl reload` is SIGHUP, which the daemon reads as "full sync now"."""
    assert one(service(unit_path), "ExecReload").split() == [
        "/bin/kill",
        "-HUP",
        "$MAINPID",
    ]


def test_config_and_lock_errors_do_not_restart_loop(unit_path: Path) -> None:
    """Exit 78 (config) and 75 (locked) stop the unit; other failures restart it."""
    svc = service(unit_path)

    assert one(svc, "Restart") == "on-failure"
    assert seconds(one(svc, "RestartSec")) >= 5
    assert {"75", "78"} <= set(one(svc, "RestartPreventExitStatus").split())


def test_restart_gives_up_only_on_a_crash_loop(unit_path: Path) -> None:
    """The start limit tolerates rare failures but stops a tight crash loop."""
    unit = parse_unit(unit_path)["Unit"]
    restart_every = seconds(one(service(unit_path), "RestartSec"))
    window = seconds(one(unit, "StartLimitIntervalSec"))
    burst = int(one(unit, "StartLimitBurst"))

    # A loop failing at once still reaches the limit inside the window...
    assert burst * restart_every < window
    # ...while a failure every few hours never does.
    assert window <= 6 * 3600


def test_watchdog_and_stop_timeout(unit_path: Path) -> None:
    """WatchdogSec leaves room for pings at half of it; stop gets 30 s."""
    svc = service(unit_path)

    assert 10 <= seconds(one(svc, "WatchdogSec")) <= 300
    assert seconds(one(svc, "TimeoutStopSec")) == 30


def test_runs_as_a_dynamic_user_with_managed_directories(unit_path: Path) -> None:
    """DynamicUser owns only the StateDirectory; config lives in /etc/stocksync."""
    svc = service(unit_path)

    assert one(svc, "DynamicUser") == "yes"
    assert one(svc, "User").startswith("stocksync")
    assert one(svc, "StateDirectory").split("/")[0] == "stocksync"
    assert one(svc, "ConfigurationDirectory") == "stocksync"
    assert one(svc, "UMask") == "0077"


def test_secrets_arrive_as_credentials_from_a_hidden_directory(
    unit_path: Path,
) -> None:
    """Each ${NAME} secret is a LoadCredential= the service cannot read at source."""
    svc = service(unit_path)
    loaded = dict(value.split(":", 1) for value in svc["LoadCredential"])

    assert set(loaded) == CREDENTIALS
    for name, source in loaded.items():
        assert source.startswith("/etc/stocksync/credentials/")
        assert source.endswith("/" + name)
    assert "-/etc/stocksync/credentials" in svc["InaccessiblePaths"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateUsers", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("DevicePolicy", "closed"),
    ],
)
def test_sandbox_setting(unit_path: Path, key: str, value: str) -> None:
    """The sandbox settings a network client can live with are all set."""
    assert one(service(unit_path), key) == value


def test_template_keeps_merchants_apart() -> None:
    """Each instance has its own config, state, user and credentials."""
    svc = service(TEMPLATE)

    assert one(svc, "ExecStart").endswith("--config /etc/stocksync/%i.yaml")
    assert one(svc, "StateDirectory") == "stocksync/%i"
    assert "%i" in one(svc, "User")
    assert all("/credentials/%i/" in v for v in svc["LoadCredential"])


def test_template_has_the_same_hardening_as_the_single_unit() -> None:
    """Apart from per-instance names, both units carry identical settings."""
    single, template = parse_unit(SINGLE), parse_unit(TEMPLATE)

    for name in ("Unit", "Service", "Install"):
        keys = (set(single[name]) | set(template[name])) - PER_INSTANCE
        differing = {k for k in keys if single[name].get(k) != template[name].get(k)}
        assert differing == set(), f"[{name}] differs in {sorted(differing)}"


def test_units_parse_without_warnings(unit_path: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing wrong but the missing binary."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")

    result = subprocess.run(
        ["systemd-analyze", "verify", str(_instance_copy(unit_path, tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )

    # Only the absent /opt/stocksync virtualenv may be reported.
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "/opt/stocksync/.venv/bin/" not in line
    ]
    assert problems == []


def test_security_exposure_is_at_most_1_5(unit_path: Path, tmp_path: Path) -> None:
    """`systemd-analyze security --offline=yes` rates each unit 1.5 or lower."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")

    copy = _instance_copy(unit_path, tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze predates --offline (systemd 250)")

    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_documented_config_loads_with_the_units_credentials(tmp_path: Path) -> None:
    """The example config resolves every ${NAME} from the units' credentials."""
    examples = _documented_configs()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name in CREDENTIALS:
        (credentials / name).write_text(f"test-{name.lower()}\n", encoding="utf-8")
    environ = {
        "CREDENTIALS_DIRECTORY": str(credentials),
        "STATE_DIRECTORY": "/var/lib/stocksync",
    }

    for index, text in enumerate(examples):
        config = tmp_path / f"config-{index}.yaml"
        config.write_text(text, encoding="utf-8")
        settings = load_settings(config, environ)

        assert settings.state_path == Path("/var/lib/stocksync/state.sqlite3")
        assert settings.forstok.user_id == "test-forstok_user_id"
        assert set(settings.secrets()) >= {
            f"test-{name.lower()}" for name in CREDENTIALS - {"FORSTOK_USER_ID"}
        }


def test_documented_admin_wrapper_matches_the_units() -> None:
    """The stocksync-admin script is valid bash and loads the same credentials."""
    scripts = _documented_blocks("bash", "stocksync-admin [@MERCHANT]")
    if ADMIN.exists():
        scripts.append(ADMIN.read_text(encoding="utf-8"))
    assert scripts, "no stocksync-admin script found in the docs"

    for script in scripts:
        check = subprocess.run(
            ["bash", "-n"], input=script, capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stderr
        assert set(re.findall(r"\b[A-Z]+(?:_[A-Z]+)+\b", script)) >= CREDENTIALS
        for unit in UNITS:
            assert one(service(unit), "ExecStart").split()[0] in script


def _documented_configs() -> list[str]:
    configs = _documented_blocks("yaml", "${FORSTOK_SECRET_KEY}")
    assert configs, "no example config.yaml found in the docs"
    return configs


def _documented_blocks(language: str, marker: str) -> list[str]:
    fence = re.compile(rf"^```{language}\n(.*?)^```", re.MULTILINE | re.DOTALL)
    blocks = []
    for doc in DOCS:
        if doc.exists():
            text = doc.read_text(encoding="utf-8")
            blocks += [b for b in fence.findall(text) if marker in b]
    return blocks


def _instance_copy(unit_path: Path, directory: Path) -> Path:
    """The unit as systemd would load it, a template under an instance name."""
    name = unit_path.name.replace("@.", "@demo.")
    copy = directory / name
    shutil.copyfile(unit_path, copy)
    return copy
