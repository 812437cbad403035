"""Forstok client: token, quantity push, partial errors, bisection, pacing, C26.

Tests fake only the transport (a handler playing Forstok), except the C26
test, which runs a small HTTP server on 127.0.0.1 so that httpx's real
connection pool is exercised.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import pytest
from conftest import FakeTime
from structlog.testing import capture_logs

from daemon.config import ForstokSettings, Secret
from daemon.errors import CredentialError, RetriableError
from daemon.forstok import ForstokClient, PushReport, QuantityRow

USER_ID = "42"
SECRET_KEY = "forstok-secret-key-value"
AUTH_URL = "https://integration.test/api/v2/auth"
QUANTITY_URL = "https://accounts.test/api/v2/variants/quantities.json"

Answer = Callable[[list[dict[str, Any]]], httpx.Response | None]


def settings(**changes: Any) -> ForstokSettings:
    values: dict[str, Any] = {
        "user_id": USER_ID,
        "secret_key": Secret(SECRET_KEY),
        "auth_url": AUTH_URL,
        "quantity_url": QUANTITY_URL,
        "max_retries": 3,
    }
    return ForstokSettings(**{**values, **changes})


def jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def rows_of(count: int, bad: str | None = None) -> list[QuantityRow]:
    rows = [QuantityRow(f"SKU-{n:02d}", 1234, n) for n in range(1, count + 1)]
    if bad is not None:
        rows[6] = QuantityRow(bad, 1234, 7)
    return rows


@dataclass
class FakeForstok:
    """Forstok's auth and quantity endpoints, after the reference's contract.

    `mode` says how a batch holding a bad SKU is answered: `partial` (200,
    errors name the rows, the others applied), `all_or_nothing` (422, nothing
    applied), `multi_status` (207, nothing applied) or `bare_error` (200
    status ERROR without rows, nothing applied).
    """

    time: FakeTime
    mode: str = "partial"
    bad: set[str] = field(default_factory=lambda: {"BAD-07"})
    ttl: float | None = 3600.0
    on_hand: dict[tuple[str, int], int] = field(default_factory=dict)
    valid: set[str] = field(default_factory=set)
    auths: int = 0
    pushes: list[list[dict[str, Any]]] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    script: list[Answer] = field(default_factory=list)
    auth_answer: httpx.Response | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.starts.append(self.time.now)
        if request.url.path == "/api/v2/auth":
            return self.auth(request)
        return self.push(request)

    def auth(self, request: httpx.Request) -> httpx.Response:
        self.auths += 1
        assert request.method == "POST"
        assert request.content == b""
        assert parse_qs(request.url.query.decode()) == {
            "id": [USER_ID],
            "secret_key": [SECRET_KEY],
            "type": ["seller"],
        }
        if self.auth_answer is not None:
            return self.auth_answer
        claims: dict[str, Any] = {"sub": USER_ID, "n": self.auths}
        if self.ttl is not None:
            claims["exp"] = int(self.time.wall() + self.ttl)
        token = jwt(claims)
        self.valid.add(token)
        return httpx.Response(200, json={"data": {"token": token}})

    def push(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "PATCH"
        assert parse_qs(request.url.query.decode()) == {
            "user_id": [USER_ID],
            "auth_type": ["jwt"],
        }
        variants = json.loads(request.content)["variants"]
        self.pushes.append(variants)

        token = request.headers["Authorization"].removeprefix("Bearer ")
        if token not in self.valid or self.expired(token):
            return httpx.Response(401, json={"status": "ERROR", "message": "bad jwt"})
        if self.script:
            scripted = self.script.pop(0)(variants)
            if scripted is not None:
                return scripted
        return self.apply(variants)

    def expired(self, token: str) -> bool:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
        return "exp" in claims and claims["exp"] <= self.time.wall()

    def apply(self, variants: list[dict[str, Any]]) -> httpx.Response:
        bad = [v for v in variants if v["sku"] in self.bad]
        if bad and self.mode != "partial":
            return self.refusal(bad)
        for v in variants:
            if v["sku"] not in self.bad:
                self.on_hand[v["sku"], v["warehouse_id"]] = v["quantity"]
        if not bad:
            return httpx.Response(200, json={"status": "OK"})
        return httpx.Response(
            200, json={"status": "ERROR", "errors": [self.row_error(v) for v in bad]}
        )

    def refusal(self, bad: list[dict[str, Any]]) -> httpx.Response:
        errors = [self.row_error(v) for v in bad]
        if self.mode == "all_or_nothing":
            body = {"status": "ERROR", "message": "invalid rows", "errors": errors}
            return httpx.Response(422, json=body)
        if self.mode == "multi_status":
            return httpx.Response(207, json={"status": "ERROR", "errors": errors})
        return httpx.Response(200, json={"status": "ERROR", "message": "failed"})

    @staticmethod
    def row_error(variant: dict[str, Any]) -> dict[str, Any]:
        return {
            "sku": variant["sku"],
            "warehouse_id": variant["warehouse_id"],
            "message": "variant not found",
        }


def make_client(fake: FakeForstok, **changes: Any) -> ForstokClient:
    return ForstokClient(
        settings(**changes),
        transport=httpx.MockTransport(fake),
        timebase=fake.time.timebase,
    )


def answer(status: int, headers: dict[str, str] | None = None) -> Answer:
    return lambda variants: httpx.Response(status, json={}, headers=headers)


# --- the request --------------------------------------------------------------------


async def test_push_sends_the_documented_request(fake_time: FakeTime) -> None:
    """forstok §2-3: auth by query, then PATCH with Bearer and `variants`."""
    fake = FakeForstok(fake_time)
    rows = [QuantityRow("SKU-001", 1234, 17), QuantityRow("SKU-002", 1234, 0)]

    async with make_client(fake) as client:
        report = await client.push_quantities(rows)

    assert report == PushReport(applied=rows, rejected=[])
    assert fake.pushes == [
        [
            {"sku": "SKU-001", "warehouse_id": 1234, "quantity": 17},
            {"sku": "SKU-002", "warehouse_id": 1234, "quantity": 0},
        ]
    ]
    assert fake.on_hand == {("SKU-001", 1234): 17, ("SKU-002", 1234): 0}
    assert client.stats.of("auth").requests == 1
    assert client.stats.of("variants/quantities").requests == 1


async def test_an_empty_push_sends_nothing(fake_time: FakeTime) -> None:
    """No rows, no request (not even the token)."""
    fake = FakeForstok(fake_time)
    async with make_client(fake) as client:
        assert await client.push_quantities([]) == PushReport()
    assert fake.starts == []


@pytest.mark.parametrize(
    ("rows", "text"),
    [
        ([QuantityRow("A", 1, -1)], "negative"),
        ([QuantityRow("A", 1, 1.5)], "whole number"),  # type: ignore[arg-type]
        ([QuantityRow("A", 1, True)], "whole number"),
        ([QuantityRow("A", 1, 1), QuantityRow("A", 1, 2)], "twice"),
        (rows_of(21), "batch_size"),
    ],
)
async def test_rows_the_caller_must_fix_raise_value_error(
    fake_time: FakeTime, rows: list[QuantityRow], text: str
) -> None:
    """Negative, fractional, duplicate or too many rows are refused up front."""
    fake = FakeForstok(fake_time)
    async with make_client(fake) as client:
        with pytest.raises(ValueError, match=text):
            await client.push_quantities(rows)
    assert fake.starts == []


# --- partial failures and bisection (C19) ----------------------------------------


@pytest.mark.parametrize(
    "mode", ["partial", "all_or_nothing", "multi_status", "bare_error"]
)
async def test_one_bad_row_in_twenty_is_isolated(
    fake_time: FakeTime, mode: str
) -> None:
    """C19: the 19 good rows land and only BAD-07 is reported, in every variant."""
    fake = FakeForstok(fake_time, mode=mode)
    rows = rows_of(20, bad="BAD-07")

    async with make_client(fake) as client:
        report = await client.push_quantities(rows)

    good = [r for r in rows if r.sku != "BAD-07"]
    assert sorted(report.applied, key=lambda r: r.sku) == sorted(
        good, key=lambda r: r.sku
    )
    assert [row.sku for row, _ in report.rejected] == ["BAD-07"]
    assert fake.on_hand == {(r.sku, r.warehouse_id): r.quantity for r in good}

    bodies = [json.dumps(p, sort_keys=True) for p in fake.pushes]
    assert len(bodies) == len(set(bodies)), "a refused body was sent unchanged"
    if mode == "partial":
        assert len(fake.pushes) == 1
        assert report.rejected[0][1] == "variant not found"
    else:
        assert len(fake.pushes) <= 11  # halving 20 rows down to one


def refusal(status: int, body: dict[str, Any]) -> Answer:
    return lambda variants: httpx.Response(status, json=body)


def named(message: str) -> list[dict[str, Any]]:
    return [{"sku": "SKU-01", "warehouse_id": 1234, "message": message}]


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (
            422,
            {"status": "ERROR", "errors": named("variant not found")},
            "variant not found",
        ),
        (207, {"status": "ERROR", "errors": named("x") * 2}, "x"),
        (422, {"message": "invalid rows", "errors": named("gone")}, "invalid rows"),
        (400, {"status": "ERROR", "errors": [{"sku": "SKU-01"}]}, "no message"),
        (200, {"status": "ERROR", "message": " failed "}, "failed"),
    ],
)
async def test_a_refused_row_keeps_forstoks_own_words(
    fake_time: FakeTime, status: int, body: dict[str, Any], reason: str
) -> None:
    """A lone row refused whole is rejected with Forstok's `message`, else
    the messages of `errors[]` (each once), never a bare "no message"
    while Forstok said something (the simulator's all_or_nothing 422)."""
    fake = FakeForstok(fake_time)
    fake.script.append(refusal(status, body))
    async with make_client(fake) as client:
        report = await client.push_quantities(rows_of(1))

    assert report.applied == []
    assert [(row.sku, why) for row, why in report.rejected] == [
        ("SKU-01", f"HTTP {status}: {reason}")
    ]


async def test_a_reason_echoing_credentials_keeps_them_out(
    fake_time: FakeTime,
) -> None:
    """Forstok's text goes to the state file and `stocksync status`: were it
    to quote the token or the secret key, neither is kept."""
    fake = FakeForstok(fake_time)

    def echo(variants: list[dict[str, Any]]) -> httpx.Response:
        (token,) = fake.valid
        text = f"token {token} of {SECRET_KEY} refused"
        return httpx.Response(422, json={"status": "ERROR", "errors": named(text)})

    fake.script.append(echo)
    async with make_client(fake) as client:
        report = await client.push_quantities(rows_of(1))

    ((_, why),) = report.rejected
    assert why == "HTTP 422: token [redacted] of [redacted] refused"


async def test_an_unreadable_success_is_retried(fake_time: FakeTime) -> None:
    """A 2xx that is not JSON confirms nothing; the same rows are sent again."""
    fake = FakeForstok(fake_time)
    fake.script.append(lambda v: httpx.Response(200, content=b"<html>"))
    async with make_client(fake) as client:
        report = await client.push_quantities(rows_of(3))

    assert len(report.applied) == 3
    assert fake.pushes[0] == fake.pushes[1]
    assert client.stats.retries == 1


# --- token --------------------------------------------------------------------------


async def test_token_is_renewed_five_minutes_before_exp(fake_time: FakeTime) -> None:
    """forstok §2 [A]: `exp` read without verification, renewed 5 min early."""
    fake = FakeForstok(fake_time, ttl=3600)
    # Pacing at 0.01 s keeps the token's age what the test says it is.
    async with make_client(fake, requests_per_minute=6000) as client:
        await client.push_quantities(rows_of(1))
        fake_time.now += 3600 - 300 - 1
        await client.push_quantities(rows_of(1))
        assert fake.auths == 1
        fake_time.now += 2
        await client.push_quantities(rows_of(1))

    assert fake.auths == 2
    assert len(fake.pushes) == 3  # no request was refused on the way


async def test_token_without_exp_is_renewed_every_30_minutes(
    fake_time: FakeTime,
) -> None:
    """forstok §2 →: without `exp`, a token lives 30 minutes."""
    fake = FakeForstok(fake_time, ttl=None)
    async with make_client(fake, requests_per_minute=6000) as client:
        await client.push_quantities(rows_of(1))
        fake_time.now += 1799
        await client.push_quantities(rows_of(1))
        assert fake.auths == 1
        fake_time.now += 2
        await client.push_quantities(rows_of(1))

    assert fake.auths == 2


async def test_a_401_re_authenticates_once(fake_time: FakeTime) -> None:
    """A token refused early (revoked) is replaced once and the push retried."""
    fake = FakeForstok(fake_time)
    async with make_client(fake) as client:
        await client.push_quantities(rows_of(1))
        fake.valid.clear()
        report = await client.push_quantities(rows_of(2))

    assert fake.auths == 2
    assert len(report.applied) == 2


async def test_a_second_401_after_a_fresh_token_needs_the_operator(
    fake_time: FakeTime,
) -> None:
    """forstok §2 →: no loop; a CredentialError tells the operator what to do."""
    fake = FakeForstok(fake_time)
    fake.script += [answer(401), answer(401), answer(401)]
    async with make_client(fake) as client:
        with pytest.raises(CredentialError, match=r"forstok\.secret_key"):
            await client.push_quantities(rows_of(1))

    assert fake.auths == 2
    assert len(fake.pushes) == 2


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(401, json={"status": "ERROR", "message": "bad key"}),
        httpx.Response(200, json={"status": "ERROR", "message": "bad key"}),
        httpx.Response(200, json={"data": {}}),
    ],
    ids=["401", "200 error", "200 without token"],
)
async def test_refused_credentials_are_a_credential_error(
    fake_time: FakeTime, reply: httpx.Response
) -> None:
    """A 401, or a 200 without data.token, from the auth call stops at once."""
    fake = FakeForstok(fake_time, auth_answer=reply)
    async with make_client(fake) as client:
        with pytest.raises(CredentialError) as caught:
            await client.push_quantities(rows_of(1))

    assert fake.auths == 1
    assert fake.pushes == []
    assert SECRET_KEY not in str(caught.value)


# --- retries, 429 and pacing ------------------------------------------------------


async def test_a_429_mid_batch_waits_retry_after(fake_time: FakeTime) -> None:
    """C22: `429 Retry-After: 60` while bisecting; the next request waits ≥ 60 s."""
    fake = FakeForstok(fake_time, mode="all_or_nothing")
    fake.script += [lambda v: None, answer(429, {"Retry-After": "60"})]
    rows = rows_of(20, bad="BAD-07")

    async with make_client(fake) as client:
        report = await client.push_quantities(rows)

    push_starts = fake.starts[1:]  # the first start is the auth call
    assert push_starts[2] - push_starts[1] >= 60.0
    assert len(report.applied) == 19
    assert client.stats.rate_limited == 1


@pytest.mark.parametrize("status", [500, 502, 503, 408])
async def test_server_errors_are_retried_then_raised(
    fake_time: FakeTime, status: int
) -> None:
    """5xx and 408 are temporary: retried with backoff, then RetriableError."""
    fake = FakeForstok(fake_time)
    fake.script += [answer(status)] * 10
    async with make_client(fake, max_retries=3) as client:
        with pytest.raises(RetriableError, match=str(status)):
            await client.push_quantities(rows_of(2))

    assert len(fake.pushes) == 4
    assert client.stats.retries == 3


async def test_a_timeout_is_retried_with_the_same_rows(fake_time: FakeTime) -> None:
    """A timed-out push may have landed; sending the absolute value again is safe."""
    fake = FakeForstok(fake_time)
    failures = iter([True])

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH" and next(failures, False):
            raise httpx.ReadTimeout("slow", request=request)
        return await fake(request)

    client = ForstokClient(
        settings(),
        transport=httpx.MockTransport(handler),
        timebase=fake_time.timebase,
    )
    async with client:
        report = await client.push_quantities(rows_of(2))

    assert len(report.applied) == 2
    assert client.stats.retries == 1


async def test_pushes_are_paced_per_minute(fake_time: FakeTime) -> None:
    """At most requests_per_minute starts (auth included) in any 60 s window."""
    fake = FakeForstok(fake_time)
    async with make_client(fake, requests_per_minute=10) as client:
        for n in range(25):
            await client.push_quantities([QuantityRow(f"S{n}", 1, n)])

    starts = sorted(fake.starts)
    assert len(starts) == 26
    for i, first in enumerate(starts):
        assert len([s for s in starts[i:] if s < first + 60.0]) <= 10
    # Evenly: one start every 6 s, never a burst of ten.
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 6.0


async def test_no_secret_in_logs_or_errors(fake_time: FakeTime) -> None:
    """The secret key and the token never reach log events or messages."""
    fake = FakeForstok(fake_time)
    fake.script += [answer(503)] * 10
    with capture_logs() as logs:
        async with make_client(fake, max_retries=2) as client:
            with pytest.raises(RetriableError) as caught:
                await client.push_quantities(rows_of(1))

    text = repr(logs) + str(caught.value)
    assert SECRET_KEY not in text
    assert all(token not in text for token in fake.valid)
    assert any(e["event"] == "http_retry" for e in logs)


# --- C26: cancellation must not exhaust the pool -------------------------------


@dataclass
class LoopbackForstok:
    """A tiny HTTP/1.1 server: issues tokens, accepts P21, hangs other pushes."""

    open_connections: int = 0
    peak_connections: int = 0
    hung: int = 0
    changed: anyio.Event = field(default_factory=anyio.Event)

    async def serve(self, stream: anyio.abc.SocketStream) -> None:
        self.open_connections += 1
        self.peak_connections = max(self.peak_connections, self.open_connections)
        try:
            await self.converse(stream)
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            pass
        finally:
            self.open_connections -= 1
            self.notify()
            await stream.aclose()

    async def converse(self, stream: anyio.abc.SocketStream) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                buffer += await stream.receive()
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = _content_length(head)
            while len(buffer) < length:
                buffer += await stream.receive()
            body, buffer = buffer[:length], buffer[length:]

            if head.startswith(b"POST"):
                await _respond(stream, {"data": {"token": "loopback-token"}})
            elif b'"P21"' in body:
                await _respond(stream, {"status": "OK"})
            else:
                self.hung += 1
                self.notify()
                await stream.receive()  # until the client goes away

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        with anyio.fail_after(5):
            while not condition():
                await self.changed.wait()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


async def _respond(stream: anyio.abc.SocketStream, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    await stream.send(head.encode() + payload)


def hung_count(server: LoopbackForstok, count: int) -> Callable[[], bool]:
    return lambda: server.hung == count


async def test_cancelled_pushes_do_not_exhaust_the_pool() -> None:
    """C26: 20 pushes cancelled mid-flight, then P21 succeeds on ≤ 5 connections."""
    server = LoopbackForstok()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    # anyio's typed attribute lookup; ruff mistakes it for Django's QuerySet.extra.
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
    base = f"http://127.0.0.1:{port}/api/v2"
    transport = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=5, max_keepalive_connections=5)
    )
    client = ForstokClient(
        settings(
            auth_url=f"{base}/auth",
            quantity_url=f"{base}/variants/quantities.json",
            requests_per_minute=6000,
            timeout=3.0,
        ),
        transport=transport,
    )

    async with listener, anyio.create_task_group() as server_group, client:
        server_group.start_soon(listener.serve, server.serve)

        for n in range(1, 21):
            async with anyio.create_task_group() as push:
                row = QuantityRow(f"P{n:02d}", 1, n)
                push.start_soon(client.push_quantities, [row])
                await server.until(hung_count(server, n))
                push.cancel_scope.cancel()

        with anyio.fail_after(5):
            report = await client.push_quantities([QuantityRow("P21", 1, 21)])
        await server.until(lambda: server.open_connections <= 5)
        open_after = server.open_connections

        server_group.cancel_scope.cancel()

    assert [row.sku for row in report.applied] == ["P21"]
    assert open_after <= 5
    assert server.peak_connections <= 5
