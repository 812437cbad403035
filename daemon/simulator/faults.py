"""Fault plans: rules that make chosen requests fail in chosen ways.

A rule matches requests by service, endpoint glob and method, then applies
its action inside a window: after letting `after` matching requests through,
to the next `count` of them (or all), optionally only every `every`-th one,
optionally only between `from_s` and `until_s` seconds after the plan was
installed. Plans load from JSON (a file or `POST /_sim/faults`):

    {"rules": [{"service": "accurate", "endpoint": "*/list.do",
                "after": 2, "count": 1,
                "action": {"kind": "status", "status": 429, "retry_after": 5,
                           "retry_after_form": "http-date"}},
               {"service": "accurate", "endpoint": "*/item/detail.do",
                "params": {"id": "101"}, "count": 1,
                "action": {"kind": "late_answer", "seconds": 2}}]}
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

ActionKind = Literal[
    "status",  # an HTTP status (429 with Retry-After, 500, 502, 503, 504...)
    "reset",  # TCP reset instead of an answer
    "hang",  # never answer; the connection stays open
    "delay",  # wait `seconds`, then answer normally
    "late_answer",  # answer at once, but send it `seconds` later
    "truncate",  # the normal answer, body cut short
    "non_json",  # an HTML page instead of JSON
    "accurate_error",  # HTTP `status` (200) with {"s":false,"d":[text]}
    "redirect_other_host",  # the database moves to the next data host: 308
    "revoked_token",  # API token refused as revoked
    "timestamp_skew",  # API token timestamp refused as too far off
    "session_expired",  # OAuth X-Session-ID refused
    "oauth_token_expired",  # OAuth access token refused
    "forstok_token_expired",  # Forstok JWT refused
    "reject_sku",  # Forstok refuses the row for `sku` with `message`
]
ACTION_KINDS: tuple[str, ...] = ActionKind.__args__  # type: ignore[attr-defined]

TOO_MANY_REQUESTS = "Terlalu banyak permintaan"  # retryable
INVALID_ITEM = "Barang & Jasa tidak tepat"  # permanent


@dataclass(frozen=True)
class FaultAction:
    kind: ActionKind
    status: int | None = None
    retry_after: int | None = None
    retry_after_form: Literal["seconds", "http-date"] = "seconds"
    seconds: float = 0.0
    text: str = TOO_MANY_REQUESTS
    sku: str | None = None
    message: str = "variant rejected"
    body: str | None = None  # overrides the default body of `status`/`non_json`

    def __post_init__(self) -> None:
        if self.kind not in ACTION_KINDS:
            raise ValueError(f"unknown fault action {self.kind!r}")

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> FaultAction:
        if isinstance(data, str):
            return cls(kind=data)  # type: ignore[arg-type]
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown action fields: {sorted(unknown)}")
        return cls(**data)


@dataclass
class FaultRule:
    action: FaultAction
    service: str = "*"
    endpoint: str = "*"
    method: str = "*"
    after: int = 0
    count: int | None = None
    every: int | None = None
    from_s: float | None = None
    until_s: float | None = None
    params: dict[str, str] | None = None  # query values the request must carry
    matched: int = field(default=0, compare=False)
    applied: int = field(default=0, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        data = dict(data)
        action = FaultAction.from_json(data.pop("action"))
        known = {f.name for f in fields(cls)} - {"action", "matched", "applied"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown rule fields: {sorted(unknown)}")
        return cls(action=action, **data)

    def matches(
        self,
        service: str,
        endpoint: str,
        method: str,
        params: dict[str, str] | None = None,
    ) -> bool:
        given = params or {}
        return (
            fnmatchcase(service, self.service)
            and fnmatchcase(endpoint, self.endpoint)
            and fnmatchcase(method.upper(), self.method.upper())
            and all(given.get(k) == str(v) for k, v in (self.params or {}).items())
        )

    def take(self, elapsed: float) -> bool:
        """Count one matching request; True if the action applies to it."""
        self.matched += 1
        if self.from_s is not None and elapsed < self.from_s:
            return False
        if self.until_s is not None and elapsed >= self.until_s:
            return False
        position = self.matched - self.after
        if position <= 0:
            return False
        if self.every and position % self.every:
            return False
        if self.count is not None and self.applied >= self.count:
            return False
        self.applied += 1
        return True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultPlan:
    def __init__(self, rules: list[FaultRule] | None = None) -> None:
        self.rules = list(rules or [])
        self.installed_at = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def from_json(cls, data: dict[str, Any] | list[Any]) -> FaultPlan:
        rules = data if isinstance(data, list) else data.get("rules", [])
        return cls([FaultRule.from_json(rule) for rule in rules])

    @classmethod
    def load(cls, path: str | Path) -> FaultPlan:
        return cls.from_json(json.loads(Path(path).read_text()))

    def select(
        self,
        service: str,
        endpoint: str,
        method: str,
        params: dict[str, str] | None = None,
    ) -> list[FaultAction]:
        """The actions that apply to this request, in rule order."""
        elapsed = time.monotonic() - self.installed_at
        with self._lock:
            return [
                rule.action
                for rule in self.rules
                if rule.matches(service, endpoint, method, params)
                and rule.take(elapsed)
            ]

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.as_dict() for rule in self.rules]
