"""Configuration: read `config.yaml`, resolve secrets, validate everything once.

Every problem is collected with its key path and reported together, so an
operator fixes a file in one pass. Settings are frozen value objects; secret
values are wrapped in `Secret`, whose repr never shows the value.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from daemon.errors import ConfigError

ACCURATE_ACCOUNT_URL = "https://account.accurate.id"
FORSTOK_AUTH_URL = "https://integration.forstok.com/api/v2/auth"
FORSTOK_QUANTITY_URL = "https://accounts.forstok.com/api/v2/variants/quantities.json"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

T = TypeVar("T")


class Secret:
    """A string that never shows itself in a repr, a log line or an error."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class OAuthSettings:
    client_id: str
    client_secret: Secret
    access_token: Secret
    refresh_token: Secret
    database_id: int


@dataclass(frozen=True)
class AccurateSettings:
    auth: Literal["api_token", "oauth"] = "api_token"
    account_url: str = ACCURATE_ACCOUNT_URL
    api_token: Secret | None = None
    signature_secret: Secret | None = None
    oauth: OAuthSettings | None = None
    requests_per_second: float = 8.0
    max_in_flight: int = 8
    page_size: int = 100
    timezone: str = "Asia/Jakarta"
    timeout: float = 30.0
    max_retries: int = 5
    retry_after_max: float = 600.0
    credential_retry_interval: float = 900.0


@dataclass(frozen=True)
class ForstokSettings:
    user_id: str
    secret_key: Secret
    auth_url: str = FORSTOK_AUTH_URL
    quantity_url: str = FORSTOK_QUANTITY_URL
    batch_size: int = 20
    requests_per_minute: float = 50.0
    timeout: float = 30.0
    max_retries: int = 5
    retry_after_max: float = 600.0


@dataclass(frozen=True)
class StockRules:
    """How much of the summed Accurate stock a Forstok warehouse offers."""

    buffer: int = 0
    percent: float = 100.0
    max: int | None = None


@dataclass(frozen=True)
class WarehouseMapping:
    accurate: str
    forstok_id: int
    rules: StockRules = field(default_factory=StockRules)


@dataclass(frozen=True)
class SyncSettings:
    poll_interval: float = 30.0
    lookback: float = 300.0
    full_sync_cron: str = "0 2 * * *"
    dry_run: bool = False
    history_days: int = 30
    progress_interval: float = 10.0


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True)
class Settings:
    accurate: AccurateSettings
    forstok: ForstokSettings
    warehouses: tuple[WarehouseMapping, ...]
    sync: SyncSettings
    state_path: Path
    log: LogSettings
    source: Path | None = None

    def secrets(self) -> list[str]:
        """Every secret value, so that log filters and tests can look for them."""
        values = [self.forstok.secret_key]
        if self.accurate.api_token:
            values.append(self.accurate.api_token)
        if self.accurate.signature_secret:
            values.append(self.accurate.signature_secret)
        if self.accurate.oauth:
            oauth = self.accurate.oauth
            values += [oauth.client_secret, oauth.access_token, oauth.refresh_token]
        return [v.reveal() for v in values if v.reveal()]


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as `30s`, `5m`, `2h`."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, 30s, 5m or 2h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("expected a duration such as 30, 30s, 5m or 2h")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


class _Reader:
    """Walks the raw YAML, converting values and collecting every problem."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []
        # Every mapping read, with its key path and the keys asked for, so
        # that a misspelt key is reported instead of silently ignored.
        self._read: list[tuple[str, Mapping[str, Any], set[str]]] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def mapping(self, raw: Mapping[str, Any], prefix: str) -> Mapping[str, Any]:
        self._read.append((prefix, raw, set()))
        return raw

    def section(self, raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        self.mark_read(raw, key)
        value = raw.get(key.rsplit(".", 1)[-1], {})
        if value is None:
            return self.mapping({}, key)
        if not isinstance(value, Mapping):
            self.problem(key, f"expected a mapping, got {_describe(value)}")
            return self.mapping({}, key)
        return self.mapping(value, key)

    def mark_read(self, raw: Mapping[str, Any], key: str) -> None:
        for _, mapping, asked in self._read:
            if mapping is raw:
                asked.add(key.rsplit(".", 1)[-1])

    def report_unknown_keys(self) -> None:
        for prefix, mapping, asked in self._read:
            for name in mapping:
                if name in asked:
                    continue
                key = f"{prefix}.{name}" if prefix else str(name)
                close = difflib.get_close_matches(str(name), sorted(asked), n=1)
                hint = f"did you mean {close[0]!r}?" if close else ""
                expected = f"expected one of {', '.join(sorted(asked))}"
                self.problem(key, f"unknown key; {hint or expected}")

    def value(
        self,
        raw: Mapping[str, Any],
        key: str,
        convert: Callable[[Any], T],
        default: T,
        *,
        required: bool = False,
    ) -> T:
        name = key.rsplit(".", 1)[-1]
        self.mark_read(raw, key)
        if name not in raw or raw[name] is None:
            if required:
                self.problem(key, "is required but missing")
            return default
        try:
            return convert(self.resolve(raw[name], key))
        except _Unresolved:
            return default
        except (TypeError, ValueError) as exc:
            shown = "***" if _is_secret_key(name) else repr(raw[name])
            self.problem(key, f"{exc} (got {shown})")
            return default

    def resolve(self, value: Any, key: str) -> Any:
        """Replace `${VAR}` with the environment or a systemd credential."""
        if not isinstance(value, str):
            return value
        names = dict.fromkeys(_ENV_REF.findall(value))
        found = {name: self._reference(key, name) for name in names}
        if None in found.values():
            raise _Unresolved
        return _ENV_REF.sub(lambda match: str(found[match.group(1)]), value)

    def _reference(self, key: str, name: str) -> str | None:
        """A reference's value; None, with the problem recorded, when it is
        missing, empty or unreadable. No problem ever shows the value."""
        ref = f"${{{name}}}"
        try:
            found = lookup_reference(name, self.environ)
        except UnicodeDecodeError:
            self.problem(
                key,
                f"{ref}: the systemd credential {name} is not UTF-8 text; "
                "write it again as UTF-8",
            )
            return None
        except OSError as exc:
            self.problem(
                key,
                f"{ref}: the systemd credential {name} cannot be read "
                f"({exc.strerror}); check the LoadCredential= line for it",
            )
            return None
        if found is None:
            self.problem(
                key,
                f"{ref} is not set: export {name} in the environment "
                "or provide it as a systemd credential of that name",
            )
            return None
        if not found.strip():
            self.problem(key, _empty_reference(name, self.environ))
            return None
        return found


class _Unresolved(Exception):
    """A `${VAR}` reference could not be resolved; the problem is recorded."""


def _empty_reference(name: str, environ: Mapping[str, str]) -> str:
    if name in environ:
        return (
            f"${{{name}}} is set but empty: export {name} with the value, or "
            "unset it to use the systemd credential of that name"
        )
    return f"${{{name}}}: the systemd credential {name} is empty: write the value in it"


def lookup_reference(name: str, environ: Mapping[str, str]) -> str | None:
    """An environment variable, else a file in `$CREDENTIALS_DIRECTORY`."""
    if name in environ:
        return environ[name]
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        path = Path(directory) / name
        if path.is_file():
            return path.read_text(encoding="utf-8").rstrip("\n")
    return None


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a config file; raise ConfigError listing every problem."""
    text = _read_config_text(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({_yaml_problem(exc)})"]) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{path}: expected a mapping at the top level"])

    settings = parse_settings(raw, os.environ if environ is None else environ)
    return _with_source(settings, path)


def _read_config_text(path: Path) -> str:
    """The file's text, or a ConfigError naming the file and the fix."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason, fix = _unreadable(exc)
        raise ConfigError([f"{path}: cannot read ({reason}); {fix}"]) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([_not_utf8(path, data, exc)]) from exc


def _unreadable(exc: OSError) -> tuple[str, str]:
    """Why a file could not be read, and what to do about it."""
    if isinstance(exc, IsADirectoryError):
        return "it is a directory", "name the YAML file itself"
    if isinstance(exc, PermissionError):
        return "permission denied", (
            f"give the user stocksync runs as (uid {os.getuid()}) read access to it"
        )
    return str(exc.strerror), "check --config or $STOCKSYNC_CONFIG"


def _not_utf8(path: Path, data: bytes, exc: UnicodeDecodeError) -> str:
    # The position only, never the bytes: they may be part of a secret.
    line = data.count(b"\n", 0, exc.start) + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return (
        f"{path}: not UTF-8 text (byte {exc.start + 1}, line {line}, column "
        f"{column}); save the file as UTF-8 (for example: iconv -f latin1 "
        "-t utf-8), as stocksync reads only that"
    )


def parse_settings(raw: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    reader = _Reader(environ)
    reader.mapping(raw, "")

    accurate = _accurate(reader, reader.section(raw, "accurate"))
    forstok = _forstok(reader, reader.section(raw, "forstok"))
    defaults = _rules(reader, reader.section(raw, "stock_rules"), "stock_rules")
    reader.mark_read(raw, "warehouses")
    warehouses = _warehouses(reader, raw.get("warehouses"), defaults)
    sync = _sync(reader, reader.section(raw, "sync"))
    state_path = reader.value(raw, "state_path", _path, Path(), required=True)
    log = _log(reader, reader.section(raw, "log"))

    reader.report_unknown_keys()
    if reader.problems:
        raise ConfigError(reader.problems)
    return Settings(accurate, forstok, warehouses, sync, state_path, log)


def _with_source(settings: Settings, path: Path) -> Settings:
    state_path = settings.state_path
    if not state_path.is_absolute():
        state_path = path.parent / state_path
    return Settings(
        settings.accurate,
        settings.forstok,
        settings.warehouses,
        settings.sync,
        state_path,
        settings.log,
        source=path,
    )


def _accurate(r: _Reader, raw: Mapping[str, Any]) -> AccurateSettings:
    d = AccurateSettings()
    auth = r.value(raw, "accurate.auth", _choice("api_token", "oauth"), "api_token")
    api_token = r.value(raw, "accurate.api_token", _secret, None)
    signature_secret = r.value(raw, "accurate.signature_secret", _secret, None)
    oauth = None
    if auth == "api_token":
        for key, value in (
            ("api_token", api_token),
            ("signature_secret", signature_secret),
        ):
            if value is None and not _problem_recorded(r, f"accurate.{key}"):
                r.problem(
                    f"accurate.{key}", "is required when accurate.auth is api_token"
                )
    else:
        oauth = _oauth(r, r.section(raw, "accurate.oauth"))

    zone = r.value(raw, "accurate.timezone", _zone, d.timezone)
    return AccurateSettings(
        auth=auth,  # type: ignore[arg-type]  # _choice checked the literal
        account_url=r.value(raw, "accurate.account_url", _url, d.account_url),
        api_token=api_token,
        signature_secret=signature_secret,
        oauth=oauth,
        requests_per_second=r.value(
            raw, "accurate.requests_per_second", _positive_float, 8.0
        ),
        max_in_flight=r.value(raw, "accurate.max_in_flight", _positive_int, 8),
        page_size=r.value(raw, "accurate.page_size", _page_size, 100),
        timezone=zone,
        timeout=r.value(raw, "accurate.timeout", _positive_duration, d.timeout),
        max_retries=r.value(raw, "accurate.max_retries", _non_negative_int, 5),
        retry_after_max=r.value(
            raw, "accurate.retry_after_max", _positive_duration, d.retry_after_max
        ),
        credential_retry_interval=r.value(
            raw,
            "accurate.credential_retry_interval",
            _positive_duration,
            d.credential_retry_interval,
        ),
    )


def _oauth(r: _Reader, raw: Mapping[str, Any]) -> OAuthSettings | None:
    required = {"required": True}
    settings = OAuthSettings(
        client_id=r.value(raw, "accurate.oauth.client_id", _text, "", **required),
        client_secret=r.value(
            raw, "accurate.oauth.client_secret", _secret, Secret(""), **required
        ),
        access_token=r.value(
            raw, "accurate.oauth.access_token", _secret, Secret(""), **required
        ),
        refresh_token=r.value(
            raw, "accurate.oauth.refresh_token", _secret, Secret(""), **required
        ),
        database_id=r.value(
            raw, "accurate.oauth.database_id", _positive_int, 0, **required
        ),
    )
    return settings


def _forstok(r: _Reader, raw: Mapping[str, Any]) -> ForstokSettings:
    required = {"required": True}
    return ForstokSettings(
        user_id=r.value(raw, "forstok.user_id", _text, "", **required),
        secret_key=r.value(raw, "forstok.secret_key", _secret, Secret(""), **required),
        auth_url=r.value(raw, "forstok.auth_url", _url, FORSTOK_AUTH_URL),
        quantity_url=r.value(raw, "forstok.quantity_url", _url, FORSTOK_QUANTITY_URL),
        batch_size=r.value(raw, "forstok.batch_size", _batch_size, 20),
        requests_per_minute=r.value(
            raw, "forstok.requests_per_minute", _positive_float, 50.0
        ),
        timeout=r.value(raw, "forstok.timeout", _positive_duration, 30.0),
        max_retries=r.value(raw, "forstok.max_retries", _non_negative_int, 5),
        retry_after_max=r.value(
            raw, "forstok.retry_after_max", _positive_duration, 600.0
        ),
    )


def _warehouses(
    r: _Reader, raw: Any, defaults: StockRules
) -> tuple[WarehouseMapping, ...]:
    if raw is None:
        r.problem("warehouses", "is required: map at least one Accurate warehouse")
        return ()
    if not isinstance(raw, list) or not raw:
        r.problem("warehouses", "expected a non-empty list of {accurate, forstok_id}")
        return ()

    mappings = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        key = f"warehouses[{index}]"
        if not isinstance(entry, Mapping):
            r.problem(key, f"expected a mapping, got {_describe(entry)}")
            continue
        r.mapping(entry, key)
        name = r.value(entry, f"{key}.accurate", _text, "", required=True)
        forstok_id = r.value(
            entry, f"{key}.forstok_id", _whole_number, 0, required=True
        )
        rules = _rules(r, entry, key, defaults)
        if name and name in seen:
            r.problem(f"{key}.accurate", f"warehouse {name!r} is mapped twice")
        seen.add(name)
        mappings.append(WarehouseMapping(name, forstok_id, rules))
    _check_shared_rules(r, mappings)
    return tuple(mappings)


def _check_shared_rules(r: _Reader, mappings: list[WarehouseMapping]) -> None:
    """Rules apply after summing, so warehouses feeding one target must agree."""
    first: dict[int, int] = {}
    for index, mapping in enumerate(mappings):
        other = first.setdefault(mapping.forstok_id, index)
        if mappings[other].rules != mapping.rules:
            r.problem(
                f"warehouses[{index}]",
                f"buffer/percent/max differ from warehouses[{other}], which feeds "
                f"the same Forstok warehouse {mapping.forstok_id}; give both the "
                "same rules",
            )


def _rules(
    r: _Reader,
    raw: Mapping[str, Any],
    key: str,
    defaults: StockRules | None = None,
) -> StockRules:
    d = defaults or StockRules()
    return StockRules(
        buffer=r.value(raw, f"{key}.buffer", _non_negative_int, d.buffer),
        percent=r.value(raw, f"{key}.percent", _percent, d.percent),
        max=r.value(raw, f"{key}.max", _non_negative_int, d.max),
    )


def _sync(r: _Reader, raw: Mapping[str, Any]) -> SyncSettings:
    d = SyncSettings()
    return SyncSettings(
        poll_interval=r.value(
            raw, "sync.poll_interval", _positive_duration, d.poll_interval
        ),
        lookback=r.value(raw, "sync.lookback", parse_duration, d.lookback),
        full_sync_cron=r.value(raw, "sync.full_sync_cron", _cron, d.full_sync_cron),
        dry_run=r.value(raw, "sync.dry_run", _bool, d.dry_run),
        history_days=r.value(raw, "sync.history_days", _positive_int, d.history_days),
        progress_interval=r.value(
            raw, "sync.progress_interval", _positive_duration, d.progress_interval
        ),
    )


def _log(r: _Reader, raw: Mapping[str, Any]) -> LogSettings:
    level = r.value(
        raw, "log.level", _choice("debug", "info", "warning", "error"), "info"
    )
    fmt = r.value(raw, "log.format", _choice("auto", "json", "console"), "auto")
    return LogSettings(level, fmt)  # type: ignore[arg-type]  # _choice checked it


def _problem_recorded(r: _Reader, key: str) -> bool:
    return any(p.startswith(f"{key}:") for p in r.problems)


def _describe(value: object) -> str:
    return type(value).__name__


def _is_secret_key(name: str) -> bool:
    return any(word in name for word in ("secret", "token", "password", "key"))


def _text(value: object) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise TypeError(f"expected text, got {_describe(value)}")
    text = str(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def _secret(value: object) -> Secret:
    if not isinstance(value, str) or not value.strip():
        raise TypeError("expected a non-empty string, for example ${ENV_VAR}")
    return Secret(value.strip())


def _url(value: object) -> str:
    text = _text(value)
    if not re.match(r"^https?://[^/\s]+", text):
        raise ValueError("expected an http:// or https:// URL")
    return text.rstrip("/")


def _path(value: object) -> Path:
    return Path(_text(value))


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _whole_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("expected a whole number")
    if isinstance(value, str):
        if not re.fullmatch(r"\d+", value.strip()):
            raise ValueError("expected a whole number")
        value = int(value.strip())
    if value <= 0:
        raise ValueError("expected a whole number greater than 0")
    return value


def _positive_int(value: object) -> int:
    return _whole_number(value)


def _non_negative_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError("expected a whole number, 0 or more")
    return value


def _number(value: object) -> float | None:
    """A finite number from YAML, else None (YAML also has .nan and .inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _positive_float(value: object) -> float:
    number = _number(value)
    if number is None or number <= 0:
        raise TypeError("expected a number greater than 0")
    return number


def _percent(value: object) -> float:
    # 0 is valid: it offers nothing, as `max: 0` does, to pause a warehouse.
    number = _number(value)
    if number is None or not 0 <= number <= 100:
        raise ValueError("expected a percentage from 0 to 100, where 0 offers nothing")
    return number


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds == 0:
        raise ValueError("must be greater than 0")
    return seconds


def _page_size(value: object) -> int:
    size = _positive_int(value)
    if size > 1000:
        raise ValueError("Accurate pages hold at most 1000 rows")
    return size


def _batch_size(value: object) -> int:
    size = _positive_int(value)
    if size > 100:
        raise ValueError("Forstok batches hold at most 100 rows")
    return size


def _zone(value: object) -> str:
    name = _text(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("expected an IANA time zone such as Asia/Jakarta") from exc
    return name


def _cron(value: object) -> str:
    text = _text(value)
    if len(text.split()) != 5:
        raise ValueError("expected a five-field cron expression such as '0 2 * * *'")
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(text)
    except ValueError as exc:
        raise ValueError(f"not a valid cron expression ({exc})") from exc
    return text


def _choice(*choices: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text

    return convert


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint and its position, without the quoted line:
    PyYAML quotes the offending line, and that line may hold a secret."""
    problem = str(getattr(exc, "problem", None) or "cannot parse")
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return problem
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def world_readable_secret_file(path: Path) -> bool:
    """True when a config file that holds a literal secret is readable by others."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError:
        return False
    if not mode & stat.S_IROTH:
        return False
    raw = yaml.safe_load(text) or {}
    return _holds_literal_secret(raw)


def _holds_literal_secret(raw: object, key: str = "") -> bool:
    if isinstance(raw, Mapping):
        return any(_holds_literal_secret(v, str(k)) for k, v in raw.items())
    if isinstance(raw, list):
        return any(_holds_literal_secret(v, key) for v in raw)
    return (
        isinstance(raw, str)
        and _is_secret_key(key)
        and not _ENV_REF.fullmatch(raw.strip())
    )
