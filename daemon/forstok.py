"""Forstok client: seller token and the bulk per-warehouse quantity push.

`push_quantities` sends one batch. An answer that names bad rows settles those
rows; any other refusal splits the batch in halves, down to single rows, so
that one bad row cannot block the others. Splitting is safe because every row
carries an absolute quantity: sending a row twice sets the same value twice.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import httpx
import structlog

from daemon import assumptions as A
from daemon.config import ForstokSettings
from daemon.errors import (
    CredentialError,
    RateLimited,
    RetriableError,
    ServiceUnavailable,
)
from daemon.http import (
    ClientStats,
    RateLimiter,
    Retrier,
    Timebase,
    log_exchange,
    make_http_client,
    network_error,
    retry_after_of,
    server_time,
    with_query,
)

log = structlog.get_logger(__name__)

SERVICE = "forstok"
AUTH_ENDPOINT = "auth"
PUSH_ENDPOINT = "variants/quantities"

ACTION_CREDENTIALS = (
    "check forstok.user_id and forstok.secret_key with Forstok; pushes are paused "
    "and the desired stock is kept until they work"
)


@dataclass(frozen=True)
class QuantityRow:
    sku: str
    warehouse_id: int
    quantity: int


@dataclass(frozen=True)
class PushReport:
    """Rows Forstok accepted, and rows it refused with its reason."""

    applied: list[QuantityRow] = field(default_factory=list)
    rejected: list[tuple[QuantityRow, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Token:
    value: str
    renew_at: float


@dataclass(frozen=True)
class _Verdict:
    """How Forstok answered one batch: all applied, some rows named, or refused."""

    ok: bool
    named: dict[QuantityRow, str]
    reason: str


class ForstokClient:
    """Pushes absolute quantities to Forstok, one request in flight.

    Requests, the auth call included, are paced evenly to
    `settings.requests_per_minute` by the limiter; create one client per
    process, or pass the same `limiter` to several.
    """

    def __init__(
        self,
        settings: ForstokSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RateLimiter | None = None,
        timebase: Timebase | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._time = timebase or Timebase()
        self._token: _Token | None = None
        self._token_lock = anyio.Lock()

        self.stats = ClientStats()
        # One start per 60/rpm seconds rather than rpm starts per minute: a
        # burst of 50 at once keeps inside the minute's budget yet looks like
        # the flood a per-second limit at Forstok would refuse (FW spaces
        # its requests 1.5 s apart).
        self._limiter = limiter or RateLimiter(
            1,
            A.FORSTOK_WINDOW_S / settings.requests_per_minute,
            A.FORSTOK_MAX_IN_FLIGHT,
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
            transport, settings.timeout, A.FORSTOK_MAX_IN_FLIGHT
        )

    @property
    def limiter(self) -> RateLimiter:
        """The pacing of this client's requests, for a caller that wants to
        wait for Forstok's turn before it decides what to send."""
        return self._limiter

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ForstokClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def push_quantities(self, rows: Sequence[QuantityRow]) -> PushReport:
        """Set on-hand quantities; at most `batch_size` rows, each pair once.

        Raises ValueError for rows the caller must fix first, RetriableError
        when Forstok stays unavailable after our retries (rows settled before
        that are simply sent again next time), and CredentialError when a
        freshly issued token is refused.
        """
        self._check_rows(rows)
        report = PushReport()
        if rows:
            await self._push_part(list(rows), report)
        return report

    def _check_rows(self, rows: Sequence[QuantityRow]) -> None:
        if len(rows) > self._settings.batch_size:
            raise ValueError(
                f"{len(rows)} rows given; forstok.batch_size is "
                f"{self._settings.batch_size}"
            )

        seen: set[tuple[str, int]] = set()
        for row in rows:
            if isinstance(row.quantity, bool) or not isinstance(row.quantity, int):
                raise ValueError(f"quantity of {row.sku!r} is not a whole number")
            if row.quantity < A.FORSTOK_MIN_QUANTITY:
                raise ValueError(f"quantity of {row.sku!r} is negative")
            if (row.sku, row.warehouse_id) in seen:
                raise ValueError(f"{row.sku!r} is given twice for {row.warehouse_id}")
            seen.add((row.sku, row.warehouse_id))

    async def _push_part(self, rows: list[QuantityRow], report: PushReport) -> None:
        verdict = await self._send(rows)

        if verdict.ok:
            report.applied.extend(rows)
            return

        if verdict.named:
            _settle_named(rows, verdict.named, report)
            return

        if len(rows) == 1:
            _reject(report, rows[0], verdict.reason)
            return

        middle = len(rows) // 2
        log.info(
            "forstok_batch_split",
            rows=len(rows),
            halves=[middle, len(rows) - middle],
            reason=verdict.reason,
        )
        await self._push_part(rows[:middle], report)
        await self._push_part(rows[middle:], report)

    async def _send(self, rows: list[QuantityRow]) -> _Verdict:
        """One batch, retried on temporary failures and re-authorised once."""
        attempt = 0
        reauthorised = False
        while True:
            token = await self._current_token()
            outcome = await self._exchange(
                PUSH_ENDPOINT, "PATCH", self._push_url(), token, _body(rows)
            )

            try:
                return self._verdict(rows, outcome, token)
            except _Unauthorised:
                if reauthorised:
                    raise CredentialError(
                        SERVICE,
                        PUSH_ENDPOINT,
                        "a freshly issued token was refused (401)",
                        ACTION_CREDENTIALS,
                    ) from None
                reauthorised = True
                self._drop_token(token)
            except RetriableError as error:
                attempt += 1
                await self._retrier.wait(PUSH_ENDPOINT, error, attempt)

    def _verdict(
        self,
        rows: list[QuantityRow],
        outcome: httpx.Response | httpx.HTTPError,
        token: str,
    ) -> _Verdict:
        response = self._checked(PUSH_ENDPOINT, outcome)
        body = _json(response)

        if response.is_success and body is None:
            # Like a timeout, the outcome is unknown (a proxy page, a cut
            # body); sending the same absolute values again is safe.
            raise ServiceUnavailable(
                SERVICE, PUSH_ENDPOINT, f"HTTP {response.status_code}, body not JSON"
            )
        ok = body is not None and body.get("status") == A.FORSTOK_SUCCESS_STATUS
        if response.is_success and ok:
            return _Verdict(ok=True, named={}, reason="")

        # Forstok's text is kept in the state file and shown to operators;
        # should it echo our credentials, they go no further than here.
        secrets = (token, self._settings.secret_key.reveal())
        reason = _scrubbed(_reason(response, body), secrets)
        named: dict[QuantityRow, str] = {}
        if response.status_code == A.FORSTOK_ROW_ERRORS.status_code:
            named = {
                row: _scrubbed(text, secrets)
                for row, text in _named_rows(rows, body).items()
            }
        return _Verdict(ok=False, named=named, reason=reason)

    def _checked(
        self, endpoint: str, outcome: httpx.Response | httpx.HTTPError
    ) -> httpx.Response:
        """The response, unless it is a failure that retrying or re-auth handles."""
        if isinstance(outcome, httpx.HTTPError):
            raise network_error(SERVICE, endpoint, outcome)

        status = outcome.status_code
        retry_after = retry_after_of(outcome, self._time.wall())
        if status == A.FORSTOK_AUTH_FAILURE_STATUS:
            raise _Unauthorised
        if status == 429:
            raise RateLimited(SERVICE, endpoint, "HTTP 429", retry_after)
        if status in A.FORSTOK_RETRIABLE_STATUSES or status >= 500:
            raise ServiceUnavailable(SERVICE, endpoint, f"HTTP {status}", retry_after)

        return outcome

    # --- token ------------------------------------------------------------------

    async def _current_token(self) -> str:
        async with self._token_lock:
            token = self._token
            if token is None or self._time.monotonic() >= token.renew_at:
                token = self._token = await self._authenticate()
            return token.value

    def _drop_token(self, value: str) -> None:
        """Forget a refused token, unless another caller already replaced it."""
        if self._token is not None and self._token.value == value:
            self._token = None

    async def _authenticate(self) -> _Token:
        attempt = 0
        while True:
            outcome = await self._exchange(AUTH_ENDPOINT, "POST", self._auth_url())
            try:
                return self._token_from(self._checked(AUTH_ENDPOINT, outcome))
            except _Unauthorised:
                raise CredentialError(
                    SERVICE,
                    AUTH_ENDPOINT,
                    "credentials refused (401)",
                    ACTION_CREDENTIALS,
                ) from None
            except RetriableError as error:
                attempt += 1
                await self._retrier.wait(AUTH_ENDPOINT, error, attempt)

    def _token_from(self, response: httpx.Response) -> _Token:
        body = _json(response)
        data = body.get("data") if body else None
        value = data.get("token") if isinstance(data, dict) else None
        # forstok §2: a 200 without data.token counts as an auth failure.
        if not response.is_success or not isinstance(value, str) or not value:
            raise CredentialError(
                SERVICE,
                AUTH_ENDPOINT,
                f"HTTP {response.status_code} without data.token",
                ACTION_CREDENTIALS,
            )

        lifetime = self._lifetime(value, response)
        log.info("forstok_token_issued", renew_in_s=round(lifetime))
        return _Token(value, self._time.monotonic() + lifetime)

    def _lifetime(self, token: str, response: httpx.Response) -> float:
        """Seconds until renewal: `exp` minus a margin, or a fixed fallback."""
        expires = _jwt_exp(token)
        if expires is None:
            return A.FORSTOK_TOKEN_FALLBACK_TTL_S

        # `exp` was written by Forstok's clock; its Date header is the fairest
        # "now" to measure it against.
        now = server_time(response) or self._time.wall()
        left = expires - now
        return max(left - A.FORSTOK_TOKEN_RENEW_MARGIN_S, left / 2, 0.0)

    # --- wire -------------------------------------------------------------------

    async def _exchange(
        self,
        endpoint: str,
        method: str,
        url: str,
        token: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> httpx.Response | httpx.HTTPError:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self._limiter:
            self.stats.of(endpoint).requests += 1
            started = self._time.monotonic()
            outcome: httpx.Response | httpx.HTTPError
            try:
                outcome = await self._http.request(
                    method, url, headers=headers, json=body
                )
            except httpx.HTTPError as exc:
                outcome = exc

        log_exchange(SERVICE, endpoint, outcome, self._time.monotonic() - started)
        return outcome

    def _auth_url(self) -> str:
        return with_query(
            self._settings.auth_url,
            [
                ("id", self._settings.user_id),
                ("secret_key", self._settings.secret_key.reveal()),
                ("type", A.FORSTOK_AUTH_TYPE),
            ],
        )

    def _push_url(self) -> str:
        return with_query(
            self._settings.quantity_url,
            [
                ("user_id", self._settings.user_id),
                ("auth_type", A.FORSTOK_SELLER_AUTH_TYPE),
            ],
        )


class _Unauthorised(Exception):
    """A 401: the caller decides between re-auth and CredentialError."""


def _body(rows: list[QuantityRow]) -> dict[str, Any]:
    return {
        "variants": [
            {"sku": r.sku, "warehouse_id": r.warehouse_id, "quantity": r.quantity}
            for r in rows
        ]
    }


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _reason(response: httpx.Response, body: dict[str, Any] | None) -> str:
    """Forstok's own words: `message`, else those of its `errors[]` (the
    assumed 422 of a batch refused whole names rows and has no `message`)."""
    text = _message(body) or _row_messages(body) or "no message"
    return f"HTTP {response.status_code}: {text}"


def _message(body: dict[str, Any] | None) -> str:
    message = body.get("message") if body else None
    return message.strip() if isinstance(message, str) else ""


def _row_messages(body: dict[str, Any] | None) -> str:
    shape = A.FORSTOK_ROW_ERRORS
    errors = body.get(shape.list_key) if body else None
    if not isinstance(errors, list):
        return ""
    texts = [
        str(entry.get(shape.message_key) or "").strip()
        for entry in errors
        if isinstance(entry, dict)
    ]
    return "; ".join(dict.fromkeys(t for t in texts if t))  # each once, in order


def _scrubbed(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text[:300]


def _named_rows(
    rows: list[QuantityRow], body: dict[str, Any] | None
) -> dict[QuantityRow, str]:
    """Rows of this batch that the answer's `errors[]` names, with its message."""
    shape = A.FORSTOK_ROW_ERRORS
    errors = body.get(shape.list_key) if body else None
    if not isinstance(errors, list):
        return {}

    named: dict[QuantityRow, str] = {}
    for entry in errors:
        if not isinstance(entry, dict):
            continue
        message = str(entry.get(shape.message_key) or "rejected")
        for row in rows:
            if _names(entry, row, shape):
                named[row] = message
    return named


def _names(entry: dict[str, Any], row: QuantityRow, shape: A.RowErrorShape) -> bool:
    if entry.get(shape.sku_key) != row.sku:
        return False
    # An entry without a warehouse names the SKU in every warehouse of the batch.
    warehouse = entry.get(shape.warehouse_key)
    return warehouse is None or str(warehouse) == str(row.warehouse_id)


def _settle_named(
    rows: list[QuantityRow], named: dict[QuantityRow, str], report: PushReport
) -> None:
    for row in rows:
        if row in named:
            _reject(report, row, named[row])
        else:
            report.applied.append(row)


def _reject(report: PushReport, row: QuantityRow, reason: str) -> None:
    report.rejected.append((row, reason))
    log.warning(
        "forstok_row_rejected",
        sku=row.sku,
        warehouse=row.warehouse_id,
        reason=reason,
    )


def _jwt_exp(token: str) -> float | None:
    """The `exp` claim, read without verifying the signature (forstok §2 [A])."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)
