"""Log output: JSON lines for the journal, secrets redacted, libraries kept quiet."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import structlog

from daemon.logs import Redactor, configure_logging, reset_logging
from daemon.simulator.app import Simulator

pytestmark = pytest.mark.timeout(20)

SECRET = "s3cr3t-value-for-redaction"

Configure = Callable[..., Callable[[], list[dict[str, Any]]]]


@pytest.fixture
def json_logs() -> Iterator[Configure]:
    """Configure logging into a buffer; returns a reader of the JSON lines."""
    buffer = io.StringIO()

    def configure(level: str = "info", secrets: tuple[str, ...] = (SECRET,)) -> Any:
        configure_logging(level, "json", secrets, stream=buffer)
        return lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]

    try:
        yield configure
    finally:
        reset_logging()


def test_events_are_json_objects_with_timestamp_level_and_event(
    json_logs: Configure,
) -> None:
    """One JSON object per event: UTC ISO 8601 timestamp, level, event, context."""
    read = json_logs()

    structlog.get_logger("t").info("push_held", sku="ABC-01", warehouse=2)

    (event,) = read()
    assert event["event"] == "push_held"
    assert event["level"] == "info"
    assert (event["sku"], event["warehouse"]) == ("ABC-01", 2)
    moment = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    assert moment.tzinfo is not None
    assert moment.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 5


def test_level_setting_filters_our_events(json_logs: Configure) -> None:
    """At level info, debug events are dropped."""
    read = json_logs("info")
    log = structlog.get_logger("t")

    log.debug("http_request")
    log.warning("forstok_unavailable")

    assert [e["event"] for e in read()] == ["forstok_unavailable"]


def test_secrets_are_redacted_everywhere_in_an_event(json_logs: Configure) -> None:
    """A configured secret is replaced in values, nested values and tracebacks."""
    read = json_logs()
    log = structlog.get_logger("t")

    log.info("odd", url=f"https://x/auth?secret_key={SECRET}", nested={"a": [SECRET]})
    try:
        raise RuntimeError(f"refused {SECRET}")
    except RuntimeError:
        log.exception("crashed")

    text = json.dumps(read())
    assert SECRET not in text
    assert text.count("***") >= 3


def test_stdlib_warnings_become_json_lines_and_are_redacted(
    json_logs: Configure,
) -> None:
    """A library's stdlib warning is a JSON line like ours, naming its logger."""
    read = json_logs()

    logging.getLogger("some.library").warning("token %s refused", SECRET)

    (event,) = read()
    assert event["event"] == "token *** refused"
    assert event["level"] == "warning"
    assert event["logger"] == "some.library"
    assert "timestamp" in event


def test_httpx_request_lines_never_reach_the_output(
    json_logs: Configure, sim: Simulator
) -> None:
    """httpx logs each request's full URL at INFO, Forstok's secret_key query
    included; even at log level debug none of it is written."""
    read = json_logs("debug", secrets=())
    url = f"{sim.forstok_auth_url}?id=1001&secret_key={SECRET}&type=seller"

    with httpx.Client() as client:
        client.post(url)

    assert read() == []
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING


def test_reconfiguring_replaces_the_stdlib_handler(json_logs: Configure) -> None:
    """Configuring twice leaves one handler of ours: each line is written once."""
    json_logs()
    read = json_logs()

    logging.getLogger("x").error("once")

    assert [e["event"] for e in read()] == ["once"]
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "stocksync"]
    assert len(ours) == 1


def test_redactor_ignores_values_too_short_to_be_secrets() -> None:
    """A short configured value (an id such as 1001) is not masked everywhere."""
    redact = Redactor(["1001", SECRET])

    event = redact(None, "info", {"event": "x", "seller": "1001", "s": SECRET})

    assert event == {"event": "x", "seller": "1001", "s": "***"}
