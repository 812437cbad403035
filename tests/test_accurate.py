"""Accurate client: auth, host discovery, envelope, errors, retries and limits.

Every test fakes only the transport: a handler plays Accurate's part.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import anyio.lowlevel
import httpx
import pytest
from conftest import FakeTime
from structlog.testing import capture_logs

from daemon.accurate import (
    ACTION_CLOCK,
    ACTION_REAUTHORIZE,
    ACTION_SCOPE,
    ACTION_SIGNATURE,
    AccurateClient,
    Filter,
    OAuthTokens,
    sign,
)
from daemon.config import AccurateSettings, OAuthSettings, Secret
from daemon.errors import (
    CredentialError,
    MalformedResponse,
    NotFound,
    PermanentError,
    RateLimited,
    ServiceError,
    ServiceUnavailable,
)

FIXTURES = Path(__file__).parent / "fixtures" / "accurate"
ACCOUNT = "https://account.test"
ZEUS = "https://zeus.accurate.id"
API_TOKEN = "aat.test-api-token-value"
SIGNATURE_SECRET = "31d49b3dc632614495ff8071e5be44a1"

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def reply(
    body: Any = None, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def envelope(d: Any, **extra: Any) -> httpx.Response:
    return reply({"s": True, "d": d, **extra})


def page_of(rows: list[dict[str, Any]], page: int = 1, count: int = 1) -> Any:
    return {"page": page, "pageSize": 100, "pageCount": count, "rowCount": len(rows)}


def query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.url.query.decode())


@dataclass
class Seen:
    request: httpx.Request
    at: float


@dataclass
class FakeAccurate:
    """A transport that records each request with its fake arrival time."""

    time: FakeTime
    handler: Handler
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(Seen(request, self.time.now))
        return await self.handler(request)

    def paths(self) -> list[str]:
        return [s.request.url.path for s in self.seen]

    def to(self, path_end: str) -> list[Seen]:
        return [s for s in self.seen if s.request.url.path.endswith(path_end)]


def api_settings(**changes: Any) -> AccurateSettings:
    values: dict[str, Any] = {
        "account_url": ACCOUNT,
        "api_token": Secret(API_TOKEN),
        "signature_secret": Secret(SIGNATURE_SECRET),
        "max_retries": 3,
        "retry_after_max": 600.0,
    }
    return AccurateSettings(**{**values, **changes})


def oauth_settings() -> AccurateSettings:
    oauth = OAuthSettings(
        client_id="client-1",
        client_secret=Secret("client-secret-value"),
        access_token=Secret("access-old"),
        refresh_token=Secret("refresh-old"),
        database_id=77,
    )
    return AccurateSettings(auth="oauth", account_url=ACCOUNT, oauth=oauth)


def make_client(
    fake: FakeAccurate,
    settings: AccurateSettings | None = None,
    **kwargs: Any,
) -> AccurateClient:
    kwargs.setdefault("data_host", ZEUS)
    return AccurateClient(
        settings or api_settings(),
        transport=httpx.MockTransport(fake),
        timebase=fake.time.timebase,
        **kwargs,
    )


def list_body(rows: list[dict[str, Any]] | None = None) -> httpx.Response:
    rows = [{"id": 1}] if rows is None else rows
    return envelope(rows, sp=page_of(rows))


async def always_list(request: httpx.Request) -> httpx.Response:
    return list_body()


# --- signing -----------------------------------------------------------------------


def test_signature_matches_the_official_test_vector() -> None:
    """accurate §2: the guide's timestamp and secret give its Base64 signature."""
    signature = sign(SIGNATURE_SECRET, "02/11/2023 09:01:01")
    assert signature == "8NxvylwwMcjGyzVXK0qbwNvFFuzHpwE9tECllVwLkbo="


async def test_every_attempt_is_signed_afresh(fake_time: FakeTime) -> None:
    """Each attempt carries a Unix-seconds timestamp and its own signature."""
    answers = iter([reply(status=503), list_body()])

    async def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client:
        fake_time.now += 0.5
        await client.list_page("item", fields=["id"])

    first, second = (s.request.headers for s in fake.seen)
    for headers in (first, second):
        assert headers["Authorization"] == f"Bearer {API_TOKEN}"
        stamp = headers["X-Api-Timestamp"]
        assert stamp.isdigit()
        assert headers["X-Api-Signature"] == sign(SIGNATURE_SECRET, stamp)
        assert "X-Session-ID" not in headers
    assert int(second["X-Api-Timestamp"]) >= int(first["X-Api-Timestamp"])
    assert fake_time.sleeps  # the backoff sleep happened between the two


# --- query strings -----------------------------------------------------------------


async def test_list_url_keeps_commas_literal(fake_time: FakeTime) -> None:
    """accurate §5: `fields` reaches the server as `a,b,c`, never `a%2Cb%2Cc`."""
    fake = FakeAccurate(fake_time, always_list)
    async with make_client(fake) as client:
        await client.list_page(
            "sales-invoice",
            fields=["id", "number", "lastUpdate", "optLock"],
            filters=[
                Filter("lastUpdate", "GREATER_EQUAL_THAN", ("01/02/2026 10:00:00",)),
                Filter("transDate", "BETWEEN", ("25/01/2026", "01/02/2026")),
            ],
            page=3,
            sort="lastUpdate|asc;id|asc",
        )

    raw = fake.seen[0].request.url.raw_path.decode()
    assert raw.startswith("/accurate/api/sales-invoice/list.do?")
    assert "fields=id,number,lastUpdate,optLock&" in raw
    assert "sp.page=3&sp.pageSize=100" in raw
    assert "sp.sort=lastUpdate%7Casc%3Bid%7Casc" in raw
    assert "filter.lastUpdate.op=GREATER_EQUAL_THAN" in raw
    assert "filter.lastUpdate.val=01%2F02%2F2026%2010%3A00%3A00" in raw
    assert "filter.transDate.val%5B0%5D=25%2F01%2F2026" in raw
    assert "filter.transDate.val%5B1%5D=01%2F02%2F2026" in raw


# --- host discovery and moves ------------------------------------------------------


@pytest.mark.parametrize("key", ["data usaha", "database"])
async def test_host_is_discovered_from_api_token_do(
    fake_time: FakeTime, key: str
) -> None:
    """Without a stored host, api-token.do gives it (either key), and it is saved."""
    body = fixture("api-token.json")
    body["d"][key] = body["d"].pop("data usaha")
    saved: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/api-token.do":
            return reply(body)
        return list_body()

    async def on_data_host(host: str) -> None:
        saved.append(host)

    fake = FakeAccurate(fake_time, handler)
    client = make_client(fake, data_host=None, on_data_host=on_data_host)
    async with client:
        await client.list_page("item", fields=["id"])
        await client.list_page("item", fields=["id"])

    assert saved == [ZEUS]
    assert fake.paths() == ["/api/api-token.do"] + ["/accurate/api/item/list.do"] * 2
    assert str(fake.seen[1].request.url).startswith(ZEUS + "/accurate/api/")
    assert "X-Api-Signature" in fake.seen[0].request.headers


async def test_api_token_do_is_retried_as_post_on_405(fake_time: FakeTime) -> None:
    """accurate §2: GET first; a 405 means the server wants POST."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/api-token.do":
            if request.method == "GET":
                return reply(status=405)
            return reply(fixture("api-token.json"))
        return list_body()

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake, data_host=None) as client:
        await client.list_page("item", fields=["id"])

    assert [s.request.method for s in fake.to("api-token.do")] == ["GET", "POST"]
    assert client.data_host == ZEUS


async def test_discovery_without_a_host_is_malformed(fake_time: FakeTime) -> None:
    """An api-token.do answer without a database host names the missing field."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return envelope({"user": {}})

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake, data_host=None) as client:
        with pytest.raises(MalformedResponse, match=r"api-token\.do.*host"):
            await client.list_page("item", fields=["id"])


async def test_308_resends_to_the_new_host_with_fresh_headers(
    fake_time: FakeTime,
) -> None:
    """accurate §1: a moved database is followed, re-signed and remembered."""
    saved: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "zeus.accurate.id":
            fake_time.now += 2  # the re-sent request carries a newer timestamp
            location = f"https://iris.accurate.id{request.url.raw_path.decode()}"
            return reply(status=308, headers={"Location": location})
        return list_body()

    async def on_data_host(host: str) -> None:
        saved.append(host)

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake, on_data_host=on_data_host) as client:
        await client.list_page("item", fields=["id", "no"])
        await client.list_page("item", fields=["id", "no"])

    hosts = [s.request.url.host for s in fake.seen]
    assert hosts == ["zeus.accurate.id", "iris.accurate.id", "iris.accurate.id"]
    assert saved == ["https://iris.accurate.id"]
    moved, resent = fake.seen[0].request, fake.seen[1].request
    assert resent.url.raw_path == moved.url.raw_path
    assert resent.headers["Authorization"] == f"Bearer {API_TOKEN}"
    stamp = resent.headers["X-Api-Timestamp"]
    assert stamp != moved.headers["X-Api-Timestamp"]
    assert resent.headers["X-Api-Signature"] == sign(SIGNATURE_SECRET, stamp)


# --- envelope and error classes ---------------------------------------------------


def error_case(
    status: int, body: Any = None, content: bytes | None = None
) -> Callable[[], httpx.Response]:
    if content is not None:
        return lambda: httpx.Response(status, content=content)
    return lambda: reply(body, status)


ERROR_CASES: list[tuple[str, Callable[[], httpx.Response], type[ServiceError], str]] = [
    ("validation at 200", error_case(200, fixture("error-validation.json")),
     PermanentError, "Barang & Jasa tidak tepat"),
    ("deleted at 200", error_case(200, {"s": False, "d": [
        "Faktur Penjualan tidak ditemukan atau sudah dihapus"]}),
     NotFound, "sudah dihapus"),
    ("too many at 200", error_case(200, {"s": False, "d": [
        "Terlalu banyak permintaan"]}), RateLimited, "Terlalu banyak"),
    ("429", error_case(429, {"s": False, "d": ["limit"]}), RateLimited, "429"),
    ("502", error_case(502), ServiceUnavailable, "502"),
    ("503", error_case(503), ServiceUnavailable, "503"),
    ("504", error_case(504), ServiceUnavailable, "504"),
    ("500", error_case(500), ServiceUnavailable, "500"),
    ("revoked", error_case(401, {"s": False, "d": [
        "Invalid or Revoked API Token"]}), CredentialError, "new API token"),
    ("invalid_token", error_case(401, fixture("error-invalid-token.json")),
     CredentialError, "new API token"),
    ("bad signature", error_case(401, fixture("error-api-token-signature.json")),
     CredentialError, ACTION_SIGNATURE),
    ("bad signature at 200", error_case(
        200, fixture("error-api-token-signature.json")),
     CredentialError, ACTION_SIGNATURE),
    ("scope", error_case(403, {"error": "insufficient_scope"}),
     CredentialError, ACTION_SCOPE),
    ("not JSON", error_case(200, content=b"<html>gateway</html>"),
     MalformedResponse, "not a JSON object"),
    ("no s", error_case(200, {"d": []}), MalformedResponse, "field s"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
async def test_each_failure_maps_to_its_error_class(
    fake_time: FakeTime,
    answer: Callable[[], httpx.Response],
    error: type[ServiceError],
    text: str,
) -> None:
    """Success needs 2xx and s true; everything else is classified once."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return answer()

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake, api_settings(max_retries=0)) as client:
        with pytest.raises(ServiceError) as caught:
            await client.detail("sales-invoice", 2246)

    assert isinstance(caught.value, error)
    assert text in str(caught.value)
    assert "sales-invoice/detail.do" in str(caught.value)
    assert len(fake.seen) == 1


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")]
)
async def test_network_failures_are_retried_then_unavailable(
    fake_time: FakeTime, exc: httpx.HTTPError
) -> None:
    """Connection errors and timeouts are temporary, within max_retries."""

    async def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake, api_settings(max_retries=2)) as client:
        with pytest.raises(ServiceUnavailable, match=type(exc).__name__):
            await client.list_page("item", fields=["id"])

    assert len(fake.seen) == 3
    assert client.stats.retries == 2


async def test_permanent_errors_are_not_retried(fake_time: FakeTime) -> None:
    """Only temporary failures are retried."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return reply(fixture("error-validation.json"))

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client:
        with pytest.raises(PermanentError):
            await client.list_page("item", fields=["id"])

    assert len(fake.seen) == 1


# --- retries and Retry-After ------------------------------------------------------


async def test_retry_after_seconds_is_honoured(fake_time: FakeTime) -> None:
    """C22: after `429 Retry-After: 5` the next request waits at least 5 s."""
    answers = iter([reply({"s": False}, 429, {"Retry-After": "5"}), list_body()])

    async def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    fake = FakeAccurate(fake_time, handler)
    with capture_logs() as logs:
        async with make_client(fake) as client:
            await client.list_page("item", fields=["id"])

    assert fake.seen[1].at - fake.seen[0].at >= 5.0
    assert fake.seen[1].at - fake.seen[0].at <= 5.0 + 0.5 + 1e-9
    retry = next(e for e in logs if e["event"] == "http_retry")
    assert retry["service"] == "accurate"
    assert retry["endpoint"] == "item/list.do"
    assert retry["attempt"] == 1
    assert retry["wait_s"] >= 5.0
    stats = client.stats.of("item/list.do")
    assert (stats.requests, stats.retries, stats.rate_limited) == (2, 1, 1)


async def test_retry_after_http_date_is_honoured(fake_time: FakeTime) -> None:
    """C22: an HTTP-date Retry-After is measured against the server's Date."""
    server_now = 1_800_000_000.0  # deliberately far from our wall clock
    headers = {
        "Date": formatdate(server_now, usegmt=True),
        "Retry-After": formatdate(server_now + 7, usegmt=True),
    }
    answers = iter([reply({"s": False}, 429, headers), list_body()])

    async def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client:
        await client.list_page("item", fields=["id"])

    assert fake.seen[1].at - fake.seen[0].at >= 7.0


async def test_retry_after_is_capped(fake_time: FakeTime) -> None:
    """A huge Retry-After is cut to retry_after_max (plus jitter)."""
    answers = iter([reply(None, 429, {"Retry-After": "86400"}), list_body()])

    async def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake, api_settings(retry_after_max=30.0)) as client:
        await client.list_page("item", fields=["id"])

    assert 30.0 <= fake.seen[1].at - fake.seen[0].at <= 31.0 + 1e-9


async def test_a_429_holds_back_every_caller(fake_time: FakeTime) -> None:
    """C22: once one call sees 429, a different call also waits Retry-After."""
    first_answered = anyio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if not first_answered.is_set():
            first_answered.set()
            return reply({"s": False}, 429, {"Retry-After": "5"})
        if request.url.path.endswith("/detail.do"):
            return envelope({"id": 5})
        return list_body()

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client, anyio.create_task_group() as tg:

        async def first_call() -> None:
            await client.list_page("item", fields=["id"])

        tg.start_soon(first_call)
        await first_answered.wait()
        await anyio.lowlevel.checkpoint()
        await client.detail("item", 5)

    detail = fake.to("detail.do")[0]
    assert detail.at - fake.seen[0].at >= 5.0


async def test_retries_stop_at_max_retries(fake_time: FakeTime) -> None:
    """Backoff is bounded: max_retries retries, then the error surfaces."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return reply(status=503)

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake, api_settings(max_retries=4)) as client:
        with pytest.raises(ServiceUnavailable):
            await client.list_page("item", fields=["id"])

    assert len(fake.seen) == 5
    assert all(0 <= wait <= 60 for wait in fake_time.sleeps)


# --- rate limiter -------------------------------------------------------------------


async def test_limiter_holds_8_per_second_and_8_in_flight(fake_time: FakeTime) -> None:
    """C22: 50 concurrent calls never exceed 8 starts per second or 8 in flight."""
    inside = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        inside -= 1
        return envelope({"id": 1})

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client, anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(client.detail, "item", n)

    starts = sorted(s.at for s in fake.seen)
    assert len(starts) == 50
    assert 1 < peak <= 8
    for i, first in enumerate(starts):
        assert len([s for s in starts[i:] if s < first + 1.0]) <= 8
    # Spaced evenly rather than in bursts of eight.
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 1.05 / 8 - 1e-9


# --- clock skew --------------------------------------------------------------------


async def test_clock_skew_is_corrected_from_the_date_header(
    fake_time: FakeTime,
) -> None:
    """accurate §2: the offset comes from Date and the request is retried once."""
    server_now = fake_time.wall() + 1_000
    skew = {"s": False, "d": ["Header X-Api Timestamp difference more than 600 s"]}
    answers = iter(
        [reply(skew, 401, {"Date": formatdate(server_now, usegmt=True)}), list_body()]
    )

    async def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client:
        await client.list_page("item", fields=["id"])

    resent = int(fake.seen[1].request.headers["X-Api-Timestamp"])
    assert abs(resent - server_now) <= 1


async def test_clock_skew_twice_needs_the_operator(fake_time: FakeTime) -> None:
    """A second skew error is not looped on: the operator must fix the clock."""
    skew = {"s": False, "d": ["Header X-Api Timestamp difference more than 600 s"]}
    date = {"Date": formatdate(fake_time.wall() + 1_000, usegmt=True)}

    async def handler(request: httpx.Request) -> httpx.Response:
        return reply(skew, 401, date)

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client:
        with pytest.raises(CredentialError) as caught:
            await client.list_page("item", fields=["id"])

    assert caught.value.action == ACTION_CLOCK
    assert len(fake.seen) == 2


# --- OAuth --------------------------------------------------------------------------


@dataclass
class FakeOAuthAccount:
    """Accurate's account host and one data host, for the OAuth method."""

    time: FakeTime
    access: str = "access-old"
    session: str = "00000000-0000-0000-0000-000000000000"
    session_in_d: bool = False
    refresh_answer: httpx.Response | None = None
    refreshes: int = 0
    session_refreshes: int = 0
    opens: int = 0
    token_forms: list[dict[str, list[str]]] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/oauth/token":
            return self.token(request)
        if request.headers.get("Authorization") != f"Bearer {self.access}":
            return reply(fixture("error-invalid-token.json"), 401)
        if path == "/api/open-db.do":
            return self.open_db(request)
        if path == "/api/db-refresh-session.do":
            self.session_refreshes += 1
            self.session = f"session-{self.session_refreshes}"
            return envelope({"session": self.session})
        if request.headers.get("X-Session-ID") != self.session:
            return reply(fixture("error-session-expired.json"), 401)
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        if path.endswith("/detail.do"):
            return envelope({"id": 1})
        return list_body()

    def open_db(self, request: httpx.Request) -> httpx.Response:
        self.opens += 1
        assert query(request) == {"id": ["77"]}
        body = fixture("open-db.json")
        self.session = body["session"]
        if self.session_in_d:
            body["d"] = {"session": body.pop("session"), "host": body.pop("host")}
        return reply(body)

    def token(self, request: httpx.Request) -> httpx.Response:
        self.refreshes += 1
        basic = base64.b64encode(b"client-1:client-secret-value").decode()
        assert request.headers["Authorization"] == f"Basic {basic}"
        self.token_forms.append(parse_qs(request.content.decode()))
        if self.refresh_answer is not None:
            return self.refresh_answer
        body = fixture("oauth-token.json")
        self.access = body["access_token"]
        return reply(body)

    def expire_session(self) -> None:
        self.session = "a-session-nobody-has"

    def expire_token(self) -> None:
        self.access = "an-access-token-nobody-has"


async def ten_details(client: AccurateClient) -> list[dict[str, Any]]:
    """Ten concurrent detail calls; their results in call order."""
    results: list[dict[str, Any]] = [{}] * 10

    async def one(n: int) -> None:
        results[n] = await client.detail("item", n)

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(one, n)
    return results


@pytest.mark.parametrize("session_in_d", [False, True])
async def test_oauth_opens_the_database_first(
    fake_time: FakeTime, session_in_d: bool
) -> None:
    """open-db gives session and host (top level or in d); data calls use both."""
    account = FakeOAuthAccount(fake_time, session_in_d=session_in_d)
    fake = FakeAccurate(fake_time, account)
    saved: list[str] = []

    async def on_data_host(host: str) -> None:
        saved.append(host)

    client = make_client(
        fake, oauth_settings(), data_host=None, on_data_host=on_data_host
    )
    async with client:
        await client.list_page("item", fields=["id"])

    open_db, listed = fake.seen
    assert str(open_db.request.url).startswith(f"{ACCOUNT}/api/open-db.do?")
    assert str(listed.request.url).startswith(f"{ZEUS}/accurate/api/item/list.do")
    assert listed.request.headers["X-Session-ID"] == account.session
    assert listed.request.headers["Authorization"] == "Bearer access-old"
    assert "X-Api-Signature" not in listed.request.headers
    assert saved == [ZEUS]


async def test_oauth_session_refresh_is_single_flight(fake_time: FakeTime) -> None:
    """Ten calls failing on an expired session cause one refresh; all succeed."""
    account = FakeOAuthAccount(fake_time)
    fake = FakeAccurate(fake_time, account)
    async with make_client(fake, oauth_settings(), data_host=None) as client:
        await client.list_page("item", fields=["id"])
        account.expire_session()
        results = await ten_details(client)

    assert results == [{"id": 1}] * 10
    assert account.session_refreshes == 1
    refresh = fake.to("db-refresh-session.do")[0].request
    assert query(refresh)["id"] == ["77"]
    assert query(refresh)["session"] == ["00000000-0000-0000-0000-000000000000"]
    assert account.opens == 1


async def test_oauth_token_refresh_is_single_flight(fake_time: FakeTime) -> None:
    """Ten calls failing on an expired token cause one refresh; all succeed."""
    account = FakeOAuthAccount(fake_time)
    fake = FakeAccurate(fake_time, account)
    saved: list[OAuthTokens] = []

    async def on_oauth_tokens(tokens: OAuthTokens) -> None:
        saved.append(tokens)

    client = make_client(
        fake, oauth_settings(), data_host=None, on_oauth_tokens=on_oauth_tokens
    )
    async with client:
        await client.list_page("item", fields=["id"])
        account.expire_token()
        results = await ten_details(client)

    assert results == [{"id": 1}] * 10
    assert account.refreshes == 1
    assert account.token_forms == [
        {"grant_type": ["refresh_token"], "refresh_token": ["refresh-old"]}
    ]
    token = fixture("oauth-token.json")
    assert len(saved) == 1
    assert saved[0].access_token.reveal() == token["access_token"]
    assert saved[0].refresh_token.reveal() == token["refresh_token"]
    assert saved[0].expires_in == 1295999


async def test_oauth_saved_tokens_win_over_the_config(fake_time: FakeTime) -> None:
    """Tokens persisted after a refresh are used instead of the config file's."""
    account = FakeOAuthAccount(fake_time, access="access-new")
    fake = FakeAccurate(fake_time, account)
    saved = OAuthTokens(Secret("access-new"), Secret("refresh-new"))
    client = make_client(fake, oauth_settings(), data_host=None, oauth_state=saved)
    async with client:
        await client.list_page("item", fields=["id"])

    assert account.refreshes == 0


async def test_oauth_refused_refresh_needs_the_operator(fake_time: FakeTime) -> None:
    """A refused refresh token stops with the re-authorise action, no loop."""
    account = FakeOAuthAccount(
        fake_time, refresh_answer=reply({"error": "invalid_grant"}, 400)
    )
    account.expire_token()
    fake = FakeAccurate(fake_time, account)
    async with make_client(fake, oauth_settings(), data_host=None) as client:
        with pytest.raises(CredentialError) as caught:
            await client.list_page("item", fields=["id"])

    assert caught.value.action == ACTION_REAUTHORIZE
    assert account.refreshes == 1


# --- reads and their bodies --------------------------------------------------------


async def test_warehouses_fixture_and_paging(fake_time: FakeTime) -> None:
    """list_warehouses reads the fixture's body and follows sp.pageCount."""
    body = fixture("warehouse-list.json")
    extra = {"id": 300, "name": "DC CONTOH", "suspended": True}

    async def handler(request: httpx.Request) -> httpx.Response:
        assert query(request)["fields"] == ["id,name,suspended"]
        if query(request)["sp.page"] == ["1"]:
            return reply({**body, "sp": {**body["sp"], "pageCount": 2}})
        return envelope([extra], sp={"page": 2, "pageCount": 2, "rowCount": 3})

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client:
        warehouses = await client.list_warehouses()

    assert [(w.id, w.name, w.suspended) for w in warehouses] == [
        (100, "Gudang Cabang", False),
        (50, "Pusat - Contoh", False),
        (300, "DC CONTOH", True),
    ]


async def test_item_balances_reads_the_item_detail_fixture(
    fake_time: FakeTime,
) -> None:
    """Per-warehouse balances of item/detail.do, the transit warehouse included."""

    async def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/accurate/api/item/detail.do"
        assert query(request)["id"] == ["2101"]
        return reply(fixture("item-detail.json"))

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client:
        item = await client.item_balances(2101)

    assert (item.item_id, item.item_no, item.item_type) == (
        2101,
        "SAPI-ABC-563",
        "INVENTORY",
    )
    assert item.suspended is True
    assert [(w.warehouse_id, w.name) for w in item.warehouses] == [
        (50, "GUDANG UTARA"),
        (100, "GUDANG TOKO"),
        (101, "Transit (AOL System)"),
    ]
    assert all(w.balance == Decimal("0.000000") for w in item.warehouses)


async def test_list_stock_reads_exact_decimals(fake_time: FakeTime) -> None:
    """Quantities stay exact (fractions, negatives, strings) as Decimal."""
    rows = [
        {"id": 1, "no": "A", "name": "a", "quantity": 279.39},
        {"id": 2, "no": "B", "name": "b", "quantity": -3},
        {"id": 3, "no": 123, "name": "c", "quantity": "5.5"},
    ]

    async def handler(request: httpx.Request) -> httpx.Response:
        return envelope(rows, sp={"page": 2, "pageCount": 4, "rowCount": 310})

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client:
        page = await client.list_stock_page(50, 2)

    raw = fake.seen[0].request.url.raw_path.decode()
    assert raw.startswith("/accurate/api/item/list-stock.do?warehouseId=50&")
    assert "fields=id,no,quantity" in raw
    assert "sp.page=2" in raw
    assert [(r.item_id, r.item_no, r.quantity) for r in page.rows] == [
        (1, "A", Decimal("279.39")),
        (2, "B", Decimal("-3")),
        (3, "123", Decimal("5.5")),
    ]
    assert (page.page, page.page_count, page.row_count) == (2, 4, 310)


async def test_answers_stay_in_order_when_the_host_clock_steps_back(
    fake_time: FakeTime,
) -> None:
    """A reading taken after NTP steps the clock back is still the newer one:
    dated by the wall clock alone it would lose to the reading before."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return reply(fixture("item-detail.json"))

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client:
        first = await client.item_balances(2101)
        fake_time.wall_offset -= 3 * 3600
        fake_time.now += 1
        second = await client.item_balances(2101)

    assert second.sent_at > first.sent_at


async def test_a_stock_row_without_an_id_stops_the_page(fake_time: FakeTime) -> None:
    """Without an id nobody can tell which item the row is about."""
    row = {"no": "A", "quantity": 2}

    async def handler(request: httpx.Request) -> httpx.Response:
        return envelope([row], sp=page_of([row]))

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client:
        with pytest.raises(MalformedResponse) as caught:
            await client.list_stock_page(50, 1)

    assert caught.value.endpoint == "item/list-stock.do"
    assert "d[].id" in str(caught.value)


@pytest.mark.parametrize(
    ("row", "field_name"),
    [
        ({"id": 1, "no": "A"}, "d[].quantity"),
        ({"id": 1, "quantity": 2}, "d[].no"),
        ({"id": 1, "no": "A", "quantity": "lots"}, "d[].quantity"),
        ({"id": 1, "no": "A", "quantity": None}, "d[].quantity"),
    ],
)
async def test_an_unreadable_stock_row_is_named_and_the_page_read(
    fake_time: FakeTime, row: dict[str, Any], field_name: str
) -> None:
    """One item's odd row leaves the rest of the page usable; the caller
    learns which item it was and what did not parse."""
    rows = [row, {"id": 2, "no": "B", "quantity": 3}]

    async def handler(request: httpx.Request) -> httpx.Response:
        return envelope(rows, sp=page_of(rows))

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client:
        page = await client.list_stock_page(50, 1)

    assert [(r.item_id, r.quantity) for r in page.rows] == [(2, Decimal(3))]
    assert list(page.unreadable) == [1]
    assert field_name in page.unreadable[1]


@pytest.mark.parametrize(
    "name", ["sales-invoice-detail-d.json", "purchase-invoice-detail-d.json"]
)
async def test_detail_returns_the_d_object(fake_time: FakeTime, name: str) -> None:
    """detail() hands the sync layer the `d` dict, numbers as Decimal."""
    d = fixture(name)

    async def handler(request: httpx.Request) -> httpx.Response:
        return envelope(d)

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client:
        got = await client.detail("sales-invoice", d["id"])

    assert got["number"] == d["number"]
    line = got["detailItem"][0]
    assert isinstance(line["quantity"], Decimal)
    assert line["quantity"] == Decimal(str(d["detailItem"][0]["quantity"]))


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({"s": True, "d": [{"id": 1}]}, "sp"),
        ({"s": True, "d": {"id": 1}, "sp": {}}, "field d"),
        ({"s": True, "d": [{"id": 1}], "sp": {"page": 1}}, "sp.pageCount"),
    ],
)
async def test_list_without_paging_or_rows_is_malformed(
    fake_time: FakeTime, body: dict[str, Any], field_name: str
) -> None:
    """A list answer lacking `d` rows or `sp` counts names the missing field."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return reply(body)

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake) as client:
        with pytest.raises(MalformedResponse, match=field_name):
            await client.list_page("item", fields=["id"])


async def test_no_secret_reaches_logs_or_errors(fake_time: FakeTime) -> None:
    """Tokens, secrets and signatures never appear in events or messages."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("api-token.do"):
            return reply(fixture("api-token.json"))
        return reply(status=503)

    fake = FakeAccurate(fake_time, handler)
    with capture_logs() as logs:
        async with make_client(fake, data_host=None) as client:
            with pytest.raises(ServiceUnavailable) as caught:
                await client.list_page("item", fields=["id"])

    signature = fake.seen[-1].request.headers["X-Api-Signature"]
    text = repr(logs) + str(caught.value)
    for secret in (API_TOKEN, SIGNATURE_SECRET, signature, "zeus.accurate.id/acc"):
        assert secret not in text


# --- the gate ------------------------------------------------------------------------


async def test_reads_pause_after_several_give_up_then_one_probes(
    fake_time: FakeTime,
) -> None:
    """Three reads in a row that run out of retries pause every read for
    5 s, without a request; then one read probes, and its success reopens."""
    down = True

    async def handler(request: httpx.Request) -> httpx.Response:
        return reply({"s": False}, 503) if down else list_body()

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake, api_settings(max_retries=0)) as client:
        for _ in range(3):
            with pytest.raises(ServiceUnavailable, match="503"):
                await client.list_page("item", fields=["id"])
        with pytest.raises(ServiceUnavailable, match="not sent") as held:
            await client.list_page("sales-invoice", fields=["id"])
        assert client.holding_back()
        assert len(fake.seen) == 3

        down = False
        fake_time.now += 5.0
        page = await client.list_page("item", fields=["id"])
        await client.list_page("item", fields=["id"])

    assert held.value.endpoint == "sales-invoice/list.do"
    assert page.rows == [{"id": 1}]
    assert not client.holding_back()
    assert len(fake.seen) == 5


async def test_one_flaky_endpoint_does_not_pause_the_others(
    fake_time: FakeTime,
) -> None:
    """A read that gives up between successful ones pauses nothing."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if "sales-invoice" in request.url.path:
            return reply({"s": False}, 503)
        return list_body()

    fake = FakeAccurate(fake_time, handler)
    async with make_client(fake, api_settings(max_retries=0)) as client:
        for _ in range(3):
            with pytest.raises(ServiceUnavailable):
                await client.list_page("sales-invoice", fields=["id"])
            await client.list_page("item", fields=["id"])

    assert not client.holding_back()
    assert len(fake.seen) == 6
