"""Structured logging: one structlog event per thing that happened.

Events have a stable snake_case name and key=value context (`kind`,
`document`, `sku`, `warehouse`, `run_id`). Output is JSON lines unless stdout
is a terminal: one object per event with `timestamp` (UTC, ISO 8601),
`level` and `event`, so that `journalctl -o cat -u stocksync | jq` works.
A redaction step replaces every configured secret wherever it appears, as a
last line of defence behind `Secret`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_HANDLER_NAME = "stocksync"
# Never below WARNING, whatever `log.level` says: httpx and httpcore write
# full URLs (query strings included) at INFO and DEBUG, and apscheduler's
# INFO lines repeat what our own events already say.
_LIBRARY_LOGGERS = ("httpx", "httpcore", "apscheduler", "aiosqlite", "asyncio")


class Redactor:
    """Replaces secret values in every string of an event with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Short values would redact innocent text; real secrets are long.
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len)[::-1]

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not self.secrets:
            return event
        for key, value in event.items():
            event[key] = self._clean(value)
        return event

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, "***")
            return value
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v) for v in value)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        return value


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Set up structlog, and the standard library's logging, for the process.

    Libraries that log through the standard library (httpx, apscheduler)
    come out as the same JSON lines, redacted the same way, but only from
    WARNING up: httpx logs every request at INFO with its full URL, and
    Forstok's URL carries the secret key in its query string.
    """
    stream = stream or sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    redactor = Redactor(secrets)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(stream, redactor, renderer)


def _route_stdlib_logging(stream: TextIO, redactor: Redactor, renderer: Any) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def reset_logging() -> None:
    """Undo `configure_logging()`: structlog's defaults, no handler of ours."""
    structlog.reset_defaults()
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)


def fresh_context(**values: Any) -> None:
    """Start the current task's log context from nothing, then bind `values`.

    A task starts with a copy of its parent's context. That is how `run_id`
    reaches the tasks of one run, but a long-lived task would otherwise
    carry whatever was bound when it was spawned into every later unit of
    work (C28). Threads started with `anyio.to_thread.run_sync` get a copy
    of the caller's context from anyio; nothing needs copying by hand.
    """
    structlog.contextvars.clear_contextvars()
    if values:
        structlog.contextvars.bind_contextvars(**values)


def new_run_id() -> str:
    """A short id that ties together the events of one poll or full sync."""
    import secrets

    return secrets.token_hex(4)
