"""Accurate Online client: auth, host discovery, lists, details and stock.

A public method describes its request as a `_Call`. `_request` then climbs a
short ladder on every attempt: make sure the data host (and, with OAuth, the
database session) is known; send once inside the rate limiter with freshly
signed headers; follow a moved database or a 405; read the envelope or
classify the failure; repair a credential once, back off a temporary failure,
or give up. Public reads first pass a gate: once Accurate refuses the
credential, or stays down for several reads in a row, they fail without a
request until a retry interval is over.

The client keeps no state of the sync: it reports a new data host or new
OAuth tokens through callbacks, and the caller persists them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any

import anyio
import httpx
import structlog

from daemon import assumptions as A
from daemon.config import AccurateSettings, OAuthSettings, Secret
from daemon.errors import (
    CredentialError,
    MalformedRecord,
    MalformedResponse,
    NotFound,
    PermanentError,
    RateLimited,
    RetriableError,
    ServiceError,
    ServiceUnavailable,
)
from daemon.http import (
    NORMAL,
    URGENT,
    ClientStats,
    RateLimiter,
    Retrier,
    StampClock,
    Timebase,
    log_exchange,
    make_http_client,
    network_error,
    retry_after_of,
    server_time,
    with_query,
)

log = structlog.get_logger(__name__)

SERVICE = "accurate"
MAX_HOST_MOVES = 3
MAX_LIST_PAGES = 100_000
MAX_REFUSALS_REMEMBERED = 1000
# Reads in a row that run out of retries before the service counts as down;
# one flaky endpoint gives up alone, an outage makes every read give up.
OUTAGE_GIVE_UPS = 3
OUTAGE_PAUSE_S = 5.0
OUTAGE_PAUSE_MAX_S = 300.0

ACTION_NEW_API_CREDENTIAL = (
    "create a new API token in Accurate (Accurate Store > API Token) and set "
    "accurate.api_token and accurate.signature_secret"
)
ACTION_SIGNATURE = (
    "set accurate.signature_secret to the Signature Secret shown with this API token"
)
ACTION_CLOCK = (
    "set the host clock right (NTP): Accurate refuses timestamps more than "
    f"{A.ACCURATE_MAX_CLOCK_SKEW_S:.0f} s away from its own clock"
)
ACTION_REAUTHORIZE = (
    "authorize stocksync again in Accurate and set accurate.oauth.access_token "
    "and accurate.oauth.refresh_token"
)
ACTION_SCOPE = (
    "authorize the application again with the view scope of every module it "
    "reads (item_view, warehouse_view and each watched document kind)"
)
ACTION_SESSION = (
    "check accurate.oauth.database_id and that the user can still open that database"
)
ACTION_ACCESS = "check that the token's user may read this module"
ACTION_REFUSED = (
    "Accurate refuses this request as it stands, so it is not retried: check "
    "the record or setting the message names in Accurate; stocksync asks "
    "again at its next run"
)


@dataclass(frozen=True)
class OAuthTokens:
    """OAuth tokens; the caller persists them when `on_oauth_tokens` fires."""

    access_token: Secret
    refresh_token: Secret
    expires_in: float | None = None


def saved_oauth_tokens(tokens: OAuthTokens, settings: AccurateSettings) -> str:
    """Tokens as the state database keeps them, tied to the configured pair.

    Rotated tokens outlive the config file's: the old refresh token dies on
    use. The fingerprint tells a restart whether the operator has since put a
    newly authorised pair in the config, which then wins.
    """
    return json.dumps(
        {
            "access_token": tokens.access_token.reveal(),
            "refresh_token": tokens.refresh_token.reveal(),
            "configured": _configured_fingerprint(settings),
        }
    )


def restored_oauth_tokens(
    saved: str | None, settings: AccurateSettings
) -> OAuthTokens | None:
    """The saved tokens, unless absent, unreadable or superseded by the config."""
    if saved is None or settings.oauth is None:
        return None
    try:
        data = json.loads(saved)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if data.get("configured") != _configured_fingerprint(settings):
        return None
    access, refresh = data.get("access_token"), data.get("refresh_token")
    if not (isinstance(access, str) and access and isinstance(refresh, str)):
        return None
    return OAuthTokens(Secret(access), Secret(refresh))


def _configured_fingerprint(settings: AccurateSettings) -> str:
    oauth = settings.oauth
    if oauth is None:
        return ""
    pair = f"{oauth.access_token.reveal()}\n{oauth.refresh_token.reveal()}"
    return hashlib.sha256(pair.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Filter:
    """`filter.<field>.op` with one value (`val`) or several (`val[n]`)."""

    field: str
    op: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class ListPage:
    rows: list[dict[str, Any]]
    page: int
    page_count: int
    row_count: int


@dataclass(frozen=True)
class Warehouse:
    id: int
    name: str
    suspended: bool


@dataclass(frozen=True)
class StockRow:
    item_id: int
    item_no: str
    quantity: Decimal


@dataclass(frozen=True)
class StockPage:
    rows: list[StockRow]
    page: int
    page_count: int
    row_count: int
    sent_at: datetime
    """When the request this page answers was sent (UTC), after any wait and
    retry: the page shows every change Accurate committed before then."""
    unreadable: dict[int, str] = field(default_factory=dict)
    """Item id -> what did not parse in that item's row, left out of `rows`."""


@dataclass(frozen=True)
class WarehouseBalance:
    warehouse_id: int
    name: str
    balance: Decimal
    suspended: bool


@dataclass(frozen=True)
class ItemBalances:
    item_id: int
    item_no: str
    item_type: str
    suspended: bool
    warehouses: list[WarehouseBalance]
    sent_at: datetime
    """As `StockPage.sent_at`."""
    unreadable: dict[int, str] = field(default_factory=dict)
    """Warehouse id -> what did not parse on that warehouse's line. Such a
    line is left out of `warehouses`: it only matters if the caller needs
    that warehouse, which the client does not know."""


class SessionExpired(CredentialError):
    """The OAuth database session is no longer valid (repairable once)."""


class TokenRejected(CredentialError):
    """The token was refused; with OAuth a refresh may repair it once."""


class ClockSkew(CredentialError):
    """Our timestamp is too far from Accurate's clock; `offset` repairs it."""

    def __init__(
        self, endpoint: str, detail: str, action: str, offset: float | None
    ) -> None:
        super().__init__(SERVICE, endpoint, detail, action)
        self.offset = offset


_REPAIRABLE = (SessionExpired, TokenRejected, ClockSkew)


def sign(secret: str, timestamp: str) -> str:
    """X-Api-Signature: Base64 of HMAC-SHA256(secret, timestamp) (accurate §2)."""
    digest = hmac.new(
        secret.encode("utf-8"), timestamp.encode("utf-8"), hashlib.sha256
    ).digest()
    if A.ACCURATE_SIGNATURE_ENCODING == "hex":
        return digest.hex()
    return base64.b64encode(digest).decode("ascii")


def classify(
    endpoint: str,
    failure: httpx.Response | httpx.HTTPError,
    *,
    wall_now: float,
    oauth: bool = False,
) -> ServiceError:
    """Map a failed exchange to the error class that tells the caller what to do."""
    if isinstance(failure, httpx.HTTPError):
        return network_error(SERVICE, endpoint, failure)

    status = failure.status_code
    body = _json(failure)
    texts = _messages(body)
    detail = f"HTTP {status}: " + ("; ".join(texts)[:300] or "no message")
    retry_after = retry_after_of(failure, wall_now)

    if status == 429:
        return RateLimited(SERVICE, endpoint, detail, retry_after)
    if status in A.ACCURATE_RETRIABLE_STATUSES:
        return ServiceUnavailable(SERVICE, endpoint, detail, retry_after)

    credential = _credential_error(endpoint, failure, texts, detail, wall_now, oauth)
    if credential is not None:
        return credential

    return _business_error(endpoint, failure, body, texts, detail, retry_after)


def read_body(
    endpoint: str,
    response: httpx.Response,
    *,
    wall_now: float,
    envelope: bool = True,
    oauth: bool = False,
) -> dict[str, Any]:
    """The body of a successful answer: 2xx, a JSON object and (`envelope`) s true."""
    body = _json(response)
    if response.is_success and isinstance(body, dict):
        if not envelope or body.get("s") is True:
            return body
        if "s" not in body:
            raise MalformedResponse(SERVICE, endpoint, "field s is missing")

    raise classify(endpoint, response, wall_now=wall_now, oauth=oauth)


def _credential_error(
    endpoint: str,
    response: httpx.Response,
    texts: list[str],
    detail: str,
    wall_now: float,
    oauth: bool,
) -> CredentialError | None:
    lowered = [t.lower() for t in texts]
    session = any(A.ACCURATE_SESSION_ERROR_TEXT in t for t in lowered)
    auth_text = any(m in t for t in lowered for m in A.ACCURATE_AUTH_FAILURE_TEXTS)
    if not (session or auth_text or response.status_code in (401, 403)):
        return None

    if session:
        return SessionExpired(SERVICE, endpoint, detail, ACTION_SESSION)
    if any(A.ACCURATE_SKEW_TEXT.search(t) for t in texts):
        now = server_time(response)
        offset = None if now is None else now - wall_now
        return ClockSkew(endpoint, detail, ACTION_CLOCK, offset)
    if A.ACCURATE_OAUTH_EXPIRED_ERROR in lowered:
        action = ACTION_REAUTHORIZE if oauth else ACTION_NEW_API_CREDENTIAL
        return TokenRejected(SERVICE, endpoint, detail, action)

    return CredentialError(SERVICE, endpoint, detail, _credential_action(texts, oauth))


def _credential_action(texts: list[str], oauth: bool) -> str:
    if any(A.ACCURATE_SCOPE_ERROR in t.lower() for t in texts):
        return ACTION_SCOPE
    if any(A.ACCURATE_SIGNATURE_TEXT.search(t) for t in texts):
        return ACTION_SIGNATURE
    if oauth:
        return ACTION_REAUTHORIZE
    return ACTION_NEW_API_CREDENTIAL


def _business_error(
    endpoint: str,
    response: httpx.Response,
    body: Any,
    texts: list[str],
    detail: str,
    retry_after: float | None,
) -> ServiceError:
    joined = " ".join(texts)
    if A.ACCURATE_DELETED_TEXT in joined.lower():
        return NotFound(SERVICE, endpoint, detail)
    if A.ACCURATE_RETRIABLE_TEXT.search(joined):
        return RateLimited(SERVICE, endpoint, detail, retry_after)

    if response.is_success and not isinstance(body, dict):
        return MalformedResponse(SERVICE, endpoint, "body is not a JSON object")

    return PermanentError(SERVICE, endpoint, detail)


def _json(response: httpx.Response) -> Any:
    # Decimal keeps quantities such as 279.39 exact for the stock arithmetic.
    try:
        return json.loads(response.content, parse_float=Decimal)
    except ValueError:
        return None


def _messages(body: Any) -> list[str]:
    """The human-readable texts of an error body (`d`, `error`, `message`)."""
    if not isinstance(body, dict):
        return []

    texts: list[str] = []
    for key in ("d", "error", "error_description", "message"):
        value = body.get(key)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts += [v for v in value if isinstance(v, str)]

    return texts


@dataclass(frozen=True)
class _Call:
    """One logical request; `endpoint` names it in logs, stats and errors."""

    endpoint: str
    data_host: bool = True
    method: str = "GET"
    query: tuple[tuple[str, str | int], ...] = ()
    form: tuple[tuple[str, str], ...] = ()
    envelope: bool = True
    basic_auth: bool = False
    post_on_405: bool = False
    moves: int = 0
    priority: int = NORMAL


@dataclass(frozen=True)
class _Hold:
    """Why reads are held back, and when the gate lets one try again."""

    error: ServiceError  # a CredentialError or a RetriableError
    retry_at: float


@dataclass(frozen=True)
class _Sent:
    """What one attempt produced, and which credentials it used."""

    outcome: httpx.Response | httpx.HTTPError
    token_epoch: int
    session_epoch: int
    sent_at: float  # wall-clock seconds


class AccurateClient:
    """Reads Accurate Online through one rate limiter, with retries.

    The limiter bounds this client's requests; create one client per process,
    or pass the same `limiter` to several, so that the bound is process-wide.
    """

    def __init__(
        self,
        settings: AccurateSettings,
        *,
        data_host: str | None = None,
        on_data_host: Callable[[str], Awaitable[None]] | None = None,
        oauth_state: OAuthTokens | None = None,
        on_oauth_tokens: Callable[[OAuthTokens], Awaitable[None]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RateLimiter | None = None,
        timebase: Timebase | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._oauth = _oauth_settings(settings)
        self._api_token, self._signature_secret = _api_token_secrets(settings)
        self._time = timebase or Timebase()
        self._stamps = StampClock(self._time)
        self._on_data_host = on_data_host
        self._on_oauth_tokens = on_oauth_tokens

        self._tokens = _initial_tokens(self._oauth, oauth_state)
        self._session: str | None = None
        self._token_epoch = 0
        self._session_epoch = 0
        self._clock_offset = 0.0
        self._host = _normalise_host(data_host) if data_host else None
        self._host_read_at = self._time.monotonic() if data_host else None

        self._host_lock = anyio.Lock()
        self._session_lock = anyio.Lock()
        self._token_lock = anyio.Lock()
        self._hold: _Hold | None = None
        self._probe: anyio.Event | None = None
        self._give_ups = 0
        self._outage_pause = OUTAGE_PAUSE_S
        self._refusals_reported: set[tuple[str, str]] = set()

        self.stats = ClientStats()
        # Starts are spaced 1/rate apart rather than let through in bursts of
        # `rate`: a burst's requests bunch up on the way (new connections, a
        # busy host), and Accurate counts arrivals, not our starts.
        window = A.ACCURATE_WINDOW_S + A.ACCURATE_WINDOW_CUSHION_S
        self._limiter = limiter or RateLimiter(
            1,
            window / settings.requests_per_second,
            settings.max_in_flight,
            self._time.monotonic,
            self._time.sleep,
        )
        self._retrier = Retrier(
            SERVICE,
            max_retries=settings.max_retries,
            retry_after_max=settings.retry_after_max,
            limiter=self._limiter,
            stats=self.stats,
            timebase=self._time,
            rng=rng or random.Random(),
        )
        self._http = make_http_client(
            transport, settings.timeout, settings.max_in_flight
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AccurateClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def data_host(self) -> str | None:
        return self._host

    # --- public reads --------------------------------------------------------

    async def list_page(
        self,
        module: str,
        *,
        fields: Sequence[str],
        filters: Sequence[Filter] = (),
        page: int = 1,
        sort: str | None = None,
    ) -> ListPage:
        """One page of `<module>/list.do`; `fields` is always sent (accurate §5)."""
        if not fields:
            raise ValueError("list_page needs at least one field")
        endpoint = f"{module}/list.do"
        query = [*_paging_query(fields, page, self._settings.page_size)]
        if sort:
            query.append(("sp.sort", sort))
        for item in filters:
            query += _filter_query(item)

        body = await self._call(_Call(endpoint, query=tuple(query)))

        rows = _rows(endpoint, body)
        page_no, page_count, row_count = _paging(endpoint, body, page)
        return ListPage(rows, page_no, page_count, row_count)

    async def detail(self, module: str, record_id: int) -> dict[str, Any]:
        """The `d` object of `<module>/detail.do?id=`; NotFound if it is gone."""
        endpoint = f"{module}/detail.do"
        # A record's read finishes work a list call found: it goes before the
        # list calls waiting for the limiter, so a change is not held up
        # behind the rest of a poll's lists.
        call = _Call(endpoint, query=(("id", record_id),), priority=URGENT)
        body = await self._call(call)

        return _object(endpoint, body, "d")

    async def list_warehouses(self) -> list[Warehouse]:
        """Every warehouse, suspended ones included, across all pages."""
        warehouses: list[Warehouse] = []
        page = 1
        while page <= MAX_LIST_PAGES:
            listed = await self.list_page(
                "warehouse", fields=A.ACCURATE_WAREHOUSE_FIELDS, page=page
            )
            warehouses += [_warehouse(row) for row in listed.rows]
            if not listed.rows or page >= listed.page_count:
                break
            page += 1

        return warehouses

    async def list_stock_page(self, warehouse_id: int, page: int) -> StockPage:
        """One page of on-hand stock in one warehouse (`item/list-stock.do`)."""
        endpoint = "item/list-stock.do"
        query = (
            ("warehouseId", warehouse_id),
            *_paging_query(A.ACCURATE_STOCK_FIELDS, page, self._settings.page_size),
        )
        body, sent_at = await self._call_stamped(_Call(endpoint, query=query))

        rows, unreadable = [], {}
        for row in _rows(endpoint, body):
            item_id = _int(endpoint, "d[].id", row.get("id"))
            try:
                rows.append(_stock_row(endpoint, item_id, row))
            except MalformedResponse as error:
                unreadable[item_id] = error.detail
        page_no, page_count, row_count = _paging(endpoint, body, page)
        return StockPage(rows, page_no, page_count, row_count, sent_at, unreadable)

    async def item_balances(self, item_id: int) -> ItemBalances:
        """Per-warehouse balances of one item, from `item/detail.do`."""
        endpoint = "item/detail.do"
        # Before waiting list calls, as `detail` is.
        call = _Call(endpoint, query=(("id", item_id),), priority=URGENT)
        body, sent_at = await self._call_stamped(call)

        try:
            return _item_balances(endpoint, _object(endpoint, body, "d"), sent_at)
        except MalformedResponse as error:
            raise MalformedRecord(
                SERVICE, endpoint, f"item {item_id}: {error.detail}"
            ) from error

    # --- the gate: refused credentials and outages ------------------------------

    def date_answers_after(self, moment: datetime) -> None:
        """Stamp no answer (`sent_at`) before `moment`: the newest stamp an
        earlier run stored, in case the host clock has since gone back."""
        self._stamps.keep_after(moment.timestamp())

    def holding_back(self) -> bool:
        """True while reads fail at once: a refused credential or an outage
        waits for its next try."""
        hold = self._hold
        return hold is not None and self._time.monotonic() < hold.retry_at

    def credentials_blocked(self) -> bool:
        """True while a refused credential waits for its next try."""
        hold = self._hold
        refused = hold is not None and isinstance(hold.error, CredentialError)
        return refused and self.holding_back()

    async def _call(self, call: _Call) -> dict[str, Any]:
        """A public read: `_request` behind the gate.

        Once Accurate refuses the credential, or several reads in a row gave
        up on temporary failures, reads fail at once without a request until
        the hold is over (`credential_retry_interval`; a pause that grows
        while Accurate stays down); then one read tries again while the
        others wait for its outcome.
        """
        return (await self._call_stamped(call))[0]

    async def _call_stamped(self, call: _Call) -> tuple[dict[str, Any], datetime]:
        """`_call`, and when the request that was answered was sent."""
        probing = await self._pass_gate(call.endpoint)
        try:
            body, sent_at = await self._request_stamped(call)
        except CredentialError as error:
            self._refused(error)
            raise
        except RetriableError as error:
            self._gave_up(error, probing)
            raise
        except PermanentError as error:
            if not isinstance(error, NotFound):
                self._report_refused(error)
            raise
        finally:
            if probing:
                self._end_probe()

        self._succeeded(probing)
        return body, datetime.fromtimestamp(sent_at, UTC)

    async def _pass_gate(self, endpoint: str) -> bool:
        """Wait for a running probe; True if this read is the next probe."""
        while self._hold is not None:
            if self._probe is not None:
                await self._probe.wait()
            elif self._time.monotonic() < self._hold.retry_at:
                raise _not_sent(endpoint, self._hold, self._time.monotonic())
            else:
                self._probe = anyio.Event()
                return True
        return False

    def _end_probe(self) -> None:
        if self._probe is not None:
            self._probe.set()
            self._probe = None

    def _close_gate(self, error: ServiceError, wait: float) -> bool:
        """Hold reads back for `wait` s; False if a hold is running already
        (reads in flight when the first failure came)."""
        now = self._time.monotonic()
        if self._hold is not None and now < self._hold.retry_at:
            return False
        self._hold = _Hold(error, now + wait)
        return True

    def _refused(self, error: CredentialError) -> None:
        wait = self._settings.credential_retry_interval
        if self._close_gate(error, wait):
            log.error(
                "accurate_credentials_rejected",
                error=str(error),
                action=error.action,
                retry_in_s=wait,
            )

    def _gave_up(self, error: RetriableError, probing: bool) -> None:
        """Count reads that ran out of retries; enough in a row pause all."""
        self._give_ups += 1
        if not probing and self._give_ups < OUTAGE_GIVE_UPS:
            return
        pause = self._outage_pause
        if self._close_gate(error, pause):
            self._outage_pause = min(OUTAGE_PAUSE_MAX_S, pause * 2)
            log.warning("accurate_reads_paused", error=str(error), retry_in_s=pause)

    def _succeeded(self, probing: bool) -> None:
        self._give_ups = 0
        self._outage_pause = OUTAGE_PAUSE_S
        hold = self._hold
        if probing and hold is not None:
            self._hold = None
            if isinstance(hold.error, CredentialError):
                log.info("accurate_credentials_accepted")

    def _report_refused(self, error: PermanentError) -> None:
        """Log a refusal the first time it is seen; repeats are the caller's."""
        key = (error.endpoint, error.detail)
        if key in self._refusals_reported:
            return
        if len(self._refusals_reported) >= MAX_REFUSALS_REMEMBERED:
            self._refusals_reported.clear()
        self._refusals_reported.add(key)
        log.error(
            "accurate_request_refused",
            endpoint=error.endpoint,
            error=str(error),
            action=ACTION_REFUSED,
        )

    # --- the request ladder ----------------------------------------------------

    async def _request(self, call: _Call) -> dict[str, Any]:
        return (await self._request_stamped(call))[0]

    async def _request_stamped(self, call: _Call) -> tuple[dict[str, Any], float]:
        attempt = 0
        repaired: set[type[CredentialError]] = set()
        while True:
            if call.data_host:
                await self._ensure_data_host()
            sent = await self._exchange(call)

            detour = await self._detour(call, sent.outcome)
            if detour is not None:
                call = detour
                continue

            try:
                return self._read(call, sent.outcome), sent.sent_at
            except _REPAIRABLE as problem:
                await self._repair(call, problem, sent, repaired)
            except RetriableError as error:
                attempt += 1
                await self._retrier.wait(call.endpoint, error, attempt)

    async def _exchange(self, call: _Call) -> _Sent:
        """Send once; the whole body is read before the limiter slot is freed."""
        async with self._limiter.slot(call.priority):
            sent_with = (self._token_epoch, self._session_epoch)
            # Built inside the slot: a signature made before a long wait would
            # carry a stale timestamp.
            headers = self._headers(call)
            self.stats.of(call.endpoint).requests += 1
            started = self._time.monotonic()
            sent_at = self._stamps.now()
            try:
                outcome: httpx.Response | httpx.HTTPError = await self._http.request(
                    call.method,
                    self._url(call),
                    headers=headers,
                    data=dict(call.form) if call.form else None,
                )
            except httpx.HTTPError as exc:
                outcome = exc

        elapsed = self._time.monotonic() - started
        log_exchange(SERVICE, call.endpoint, outcome, elapsed)
        return _Sent(outcome, *sent_with, sent_at)

    async def _detour(
        self, call: _Call, outcome: httpx.Response | httpx.HTTPError
    ) -> _Call | None:
        """The call to send instead: POST after a 405, the new host after a 308."""
        if not isinstance(outcome, httpx.Response):
            return None

        if outcome.status_code == 405 and call.post_on_405:
            method = A.ACCURATE_API_TOKEN_METHODS[1]
            return replace(call, method=method, post_on_405=False)

        if outcome.status_code == A.ACCURATE_MOVED_STATUS and call.data_host:
            if call.moves >= MAX_HOST_MOVES:
                raise MalformedResponse(SERVICE, call.endpoint, "too many 308 moves")
            await self._set_host(_location_host(call.endpoint, outcome), moved=True)
            return replace(call, moves=call.moves + 1)

        return None

    def _read(
        self, call: _Call, outcome: httpx.Response | httpx.HTTPError
    ) -> dict[str, Any]:
        wall_now = self._time.wall()
        oauth = self._oauth is not None
        if isinstance(outcome, httpx.HTTPError):
            raise classify(call.endpoint, outcome, wall_now=wall_now, oauth=oauth)

        return read_body(
            call.endpoint,
            outcome,
            wall_now=wall_now,
            envelope=call.envelope,
            oauth=oauth,
        )

    async def _repair(
        self,
        call: _Call,
        problem: CredentialError,
        sent: _Sent,
        repaired: set[type[CredentialError]],
    ) -> None:
        """Repair a credential once per request, or re-raise the problem."""
        kind = type(problem)
        if kind in repaired or call.basic_auth:
            raise problem
        repaired.add(kind)

        if isinstance(problem, ClockSkew) and problem.offset is not None:
            self._clock_offset = problem.offset
            log.warning("accurate_clock_offset", offset_s=round(problem.offset, 1))
        elif isinstance(problem, SessionExpired) and self._oauth and call.data_host:
            await self._renew_session(sent.session_epoch)
        elif isinstance(problem, TokenRejected) and self._oauth:
            await self._renew_token(sent.token_epoch)
        else:
            raise problem

    # --- headers and URLs --------------------------------------------------------

    def _headers(self, call: _Call) -> dict[str, str]:
        if call.basic_auth:
            return {"Authorization": _basic_auth(self._oauth)}

        if self._tokens is not None:
            headers = {"Authorization": f"Bearer {self._tokens.access_token.reveal()}"}
            if call.data_host and self._session:
                headers["X-Session-ID"] = self._session
            return headers

        timestamp = self._timestamp()
        return {
            "Authorization": f"Bearer {self._api_token}",
            "X-Api-Timestamp": timestamp,
            "X-Api-Signature": sign(self._signature_secret, timestamp),
        }

    def _timestamp(self) -> str:
        # Corrected by the offset a skew error taught us (accurate §2).
        moment = self._time.wall() + self._clock_offset
        if A.ACCURATE_TIMESTAMP_FORM == "iso":
            return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return str(int(moment))

    def _url(self, call: _Call) -> str:
        if call.data_host:
            base = f"{self._host}/accurate/api/{call.endpoint}"
        else:
            base = f"{self._settings.account_url}/{call.endpoint}"
        return with_query(base, call.query)

    # --- data host, session and token --------------------------------------------

    async def _ensure_data_host(self) -> None:
        if self._host_is_fresh():
            return
        async with self._host_lock:
            if self._host_is_fresh():
                return
            if self._oauth is not None:
                await self._open_db()
            else:
                await self._discover_host()

    def _host_is_fresh(self) -> bool:
        if self._host is None or self._host_read_at is None:
            return False
        if self._oauth is not None and self._session is None:
            return False
        age = self._time.monotonic() - self._host_read_at
        return age < A.ACCURATE_HOST_REREAD_S

    async def _discover_host(self) -> None:
        endpoint = "api/api-token.do"
        call = _Call(endpoint, data_host=False, post_on_405=True)
        body = await self._request(call)

        await self._set_host(_database_host(endpoint, body), moved=False)

    async def _open_db(self) -> None:
        assert self._oauth is not None
        endpoint = "api/open-db.do"
        query = (("id", self._oauth.database_id),)
        body = await self._request(_Call(endpoint, data_host=False, query=query))

        self._session = _top_or_d(endpoint, body, A.ACCURATE_SESSION_KEY)
        self._session_epoch += 1
        await self._set_host(_top_or_d(endpoint, body, A.ACCURATE_HOST_KEY), False)
        log.info("accurate_database_opened")

    async def _renew_session(self, used_epoch: int) -> None:
        """Single-flight: only the first of many failed callers renews."""
        async with self._session_lock:
            if self._session_epoch != used_epoch:
                return
            try:
                self._session = await self._refresh_session()
                self._session_epoch += 1
                log.info("accurate_session_refreshed")
            except (PermanentError, MalformedResponse) as exc:
                if _hard_credential_error(exc):
                    raise
                # A session too old to refresh needs the database opened anew.
                await self._open_db()

    async def _refresh_session(self) -> str:
        assert self._oauth is not None
        assert self._session is not None
        endpoint = "api/db-refresh-session.do"
        query = (("id", self._oauth.database_id), ("session", self._session))
        body = await self._request(_Call(endpoint, data_host=False, query=query))

        return _text(endpoint, "d.session", _object(endpoint, body, "d").get("session"))

    async def _renew_token(self, used_epoch: int) -> None:
        """Single-flight: only the first of many failed callers refreshes."""
        async with self._token_lock:
            if self._token_epoch != used_epoch:
                return
            tokens = await self._refresh_token()
            self._tokens = tokens
            self._token_epoch += 1
            log.info("accurate_token_refreshed", expires_in_s=tokens.expires_in)
            if self._on_oauth_tokens is not None:
                await self._on_oauth_tokens(tokens)

    async def _refresh_token(self) -> OAuthTokens:
        assert self._tokens is not None
        endpoint = "oauth/token"
        form = (
            ("grant_type", "refresh_token"),
            ("refresh_token", self._tokens.refresh_token.reveal()),
        )
        call = _Call(
            endpoint,
            data_host=False,
            method="POST",
            form=form,
            envelope=False,
            basic_auth=True,
        )
        try:
            body = await self._request(call)
        except PermanentError as exc:
            raise CredentialError(
                SERVICE, endpoint, f"refresh refused ({exc.detail})", ACTION_REAUTHORIZE
            ) from None

        return _tokens_from(endpoint, body, self._tokens)

    async def _set_host(self, host: str, moved: bool) -> None:
        host = _normalise_host(host)
        self._host_read_at = self._time.monotonic()
        if host == self._host:
            return

        self._host = host
        log.info("accurate_data_host", host=host, moved=moved)
        if self._on_data_host is not None:
            await self._on_data_host(host)


# --- construction helpers ----------------------------------------------------------


def _oauth_settings(settings: AccurateSettings) -> OAuthSettings | None:
    if settings.auth != "oauth":
        return None
    if settings.oauth is None:
        raise ValueError("accurate.auth is oauth but accurate.oauth is missing")
    return settings.oauth


def _api_token_secrets(settings: AccurateSettings) -> tuple[str, str]:
    if settings.auth == "oauth":
        return "", ""
    if settings.api_token is None or settings.signature_secret is None:
        raise ValueError("accurate.api_token and accurate.signature_secret are needed")
    return settings.api_token.reveal(), settings.signature_secret.reveal()


def _initial_tokens(
    oauth: OAuthSettings | None, saved: OAuthTokens | None
) -> OAuthTokens | None:
    if oauth is None:
        return None
    # Tokens saved after a refresh are newer than the ones in the config file.
    return saved or OAuthTokens(oauth.access_token, oauth.refresh_token)


def _not_sent(endpoint: str, hold: _Hold, now: float) -> ServiceError:
    """The error of a read the gate holds back, naming the failure behind it."""
    error = hold.error
    if isinstance(error, CredentialError):
        why = error.detail.removesuffix(f"; {error.action}")
        detail = f"not sent: {error.endpoint} was refused ({why})"
        return CredentialError(SERVICE, endpoint, detail, error.action)

    wait = max(0.0, hold.retry_at - now)
    detail = f"not sent: Accurate is unavailable ({error.endpoint}: {error.detail})"
    return ServiceUnavailable(SERVICE, endpoint, detail, wait)


def _hard_credential_error(exc: ServiceError) -> bool:
    return isinstance(exc, CredentialError) and not isinstance(exc, SessionExpired)


def _basic_auth(oauth: OAuthSettings | None) -> str:
    assert oauth is not None
    pair = f"{oauth.client_id}:{oauth.client_secret.reveal()}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def _normalise_host(host: str) -> str:
    host = host.strip().rstrip("/")
    if "://" not in host:
        host = f"https://{host}"
    return host


# --- query builders ----------------------------------------------------------------


def _paging_query(
    fields: Sequence[str], page: int, page_size: int
) -> list[tuple[str, str | int]]:
    return [("fields", ",".join(fields)), ("sp.page", page), ("sp.pageSize", page_size)]


def _filter_query(item: Filter) -> list[tuple[str, str | int]]:
    prefix = f"filter.{item.field}"
    query: list[tuple[str, str | int]] = [(f"{prefix}.op", item.op)]
    if len(item.values) == 1:
        query.append((f"{prefix}.val", item.values[0]))
    else:
        query += [(f"{prefix}.val[{n}]", v) for n, v in enumerate(item.values)]
    return query


# --- body readers -----------------------------------------------------------------


def _object(endpoint: str, body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        raise MalformedResponse(SERVICE, endpoint, f"field {key} is not an object")
    return value


def _rows(endpoint: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    rows = body.get("d")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise MalformedResponse(SERVICE, endpoint, "field d is not a list of records")
    for row in rows:
        _int(endpoint, "d[].id", row.get("id"))
    return rows


def _paging(endpoint: str, body: dict[str, Any], asked: int) -> tuple[int, int, int]:
    sp = _object(endpoint, body, "sp")
    page = sp.get("page", asked)
    return (
        _int(endpoint, "sp.page", asked if page is None else page),
        _int(endpoint, "sp.pageCount", sp.get("pageCount")),
        _int(endpoint, "sp.rowCount", sp.get("rowCount")),
    )


def _warehouse(row: dict[str, Any]) -> Warehouse:
    endpoint = "warehouse/list.do"
    return Warehouse(
        id=_int(endpoint, "d[].id", row.get("id")),
        name=_text(endpoint, "d[].name", row.get("name")),
        suspended=row.get("suspended") is True,
    )


def _stock_row(endpoint: str, item_id: int, row: dict[str, Any]) -> StockRow:
    return StockRow(
        item_id=item_id,
        item_no=_text(endpoint, "d[].no", row.get("no")),
        quantity=_decimal(endpoint, "d[].quantity", row.get("quantity")),
    )


def _item_balances(
    endpoint: str, item: dict[str, Any], sent_at: datetime
) -> ItemBalances:
    item_type = _text(endpoint, "d.itemType", item.get("itemType"))
    lines = item.get(A.ACCURATE_ITEM_WAREHOUSES_KEY)
    # Services and other non-stock items carry no warehouse data.
    if lines is None and item_type != "INVENTORY":
        lines = []
    if not isinstance(lines, list) or not all(isinstance(x, dict) for x in lines):
        key = f"d.{A.ACCURATE_ITEM_WAREHOUSES_KEY}"
        raise MalformedResponse(SERVICE, endpoint, f"field {key} is not a list")

    warehouses, unreadable = [], {}
    for line in lines:
        prefix = f"d.{A.ACCURATE_ITEM_WAREHOUSES_KEY}[]"
        warehouse_id = _int(endpoint, f"{prefix}.id", line.get("id"))
        try:
            warehouses.append(_warehouse_balance(endpoint, warehouse_id, line))
        except MalformedResponse as error:
            unreadable[warehouse_id] = error.detail
    return ItemBalances(
        item_id=_int(endpoint, "d.id", item.get("id")),
        item_no=_text(endpoint, "d.no", item.get("no")),
        item_type=item_type,
        suspended=item.get("suspended") is True,
        warehouses=warehouses,
        sent_at=sent_at,
        unreadable=unreadable,
    )


def _warehouse_balance(
    endpoint: str, warehouse_id: int, line: dict[str, Any]
) -> WarehouseBalance:
    prefix = f"d.{A.ACCURATE_ITEM_WAREHOUSES_KEY}[]"
    return WarehouseBalance(
        warehouse_id=warehouse_id,
        name=_text(endpoint, f"{prefix}.name", line.get("name")),
        balance=_decimal(endpoint, f"{prefix}.balance", line.get("balance")),
        suspended=line.get("suspended") is True,
    )


def _database_host(endpoint: str, body: dict[str, Any]) -> str:
    d = _object(endpoint, body, "d")
    for key in A.ACCURATE_DATABASE_KEYS:
        database = d.get(key)
        if isinstance(database, dict) and database.get("host"):
            return _text(endpoint, f"d.{key}.host", database["host"])
    raise MalformedResponse(SERVICE, endpoint, "field d.database.host is missing")


def _top_or_d(endpoint: str, body: dict[str, Any], key: str) -> str:
    """open-db.do puts `session` and `host` at the top level, or in `d`."""
    value = body.get(key)
    d = body.get("d")
    if value is None and isinstance(d, dict):
        value = d.get(key)
    return _text(endpoint, key, value)


def _tokens_from(
    endpoint: str, body: dict[str, Any], previous: OAuthTokens
) -> OAuthTokens:
    access = _text(endpoint, "access_token", body.get("access_token"))
    refresh = previous.refresh_token
    # A refresh answer may omit the refresh token; the old one stays valid.
    if isinstance(body.get("refresh_token"), str) and body["refresh_token"]:
        refresh = Secret(body["refresh_token"])
    expires_in = body.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | Decimal):
        expires_in = None

    return OAuthTokens(
        access_token=Secret(access),
        refresh_token=refresh,
        expires_in=None if expires_in is None else float(expires_in),
    )


def _location_host(endpoint: str, response: httpx.Response) -> str:
    location = response.headers.get("Location", "")
    try:
        url = httpx.URL(location)
    except httpx.InvalidURL:
        url = httpx.URL("")
    if not url.scheme or not url.host:
        raise MalformedResponse(SERVICE, endpoint, "308 without an absolute Location")
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"


def _int(endpoint: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedResponse(SERVICE, endpoint, f"field {field} is not an integer")
    return value


def _text(endpoint: str, field: str, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise MalformedResponse(SERVICE, endpoint, f"field {field} is missing")
    return value


def _decimal(endpoint: str, field: str, value: Any) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise MalformedResponse(SERVICE, endpoint, f"field {field} is not a number")
    try:
        number = Decimal(value) if isinstance(value, int | str) else value
    except InvalidOperation:
        number = None
    if not isinstance(number, Decimal) or not number.is_finite():
        raise MalformedResponse(SERVICE, endpoint, f"field {field} is not a number")
    return number
