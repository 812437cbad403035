"""Accurate authentication: API token (reference §2) and OAuth (§3).

A data call is judged by its bearer token: the configured API token must
come with a fresh signed timestamp; an OAuth access token must come with a
live `X-Session-ID`. Lifetimes use real time (see clock.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from daemon.simulator.accurate import AccurateModel
from daemon.simulator.clock import format_date, parse_last_update
from daemon.simulator.config import AccurateConfig
from daemon.simulator.documents import KINDS
from daemon.simulator.server import Request, Response, json_response

REVOKED = "Invalid or Revoked API Token"
UNAUTHORIZED = "Unauthorized"
SIGNATURE_REQUIRED = "Header X-Api-Signature is required"
TIMESTAMP_REQUIRED = "Header X-Api-Timestamp is required"
# The reference abbreviates the next two as "…invalid"; the only observed
# body (fixture error-api-token-signature.json) has no "is".
SIGNATURE_INVALID = "Header X-Api-Signature invalid"
TIMESTAMP_INVALID = "Header X-Api-Timestamp invalid"
# The reference cuts this one after "seconds"; the ending is the simulator's.
TIMESTAMP_SKEW = "Header X-Api Timestamp difference more than 600 seconds from server"
SESSION_INVALID = "Data Session Key tidak tepat"


def signature_matches(secret: str, timestamp: str, signature: str) -> bool:
    """HMAC-SHA256(secret, timestamp) given as Base64 or as hex."""
    digest = hmac.new(secret.encode(), timestamp.encode(), hashlib.sha256).digest()
    as_base64 = base64.b64encode(digest).decode()
    return hmac.compare_digest(signature, as_base64) or hmac.compare_digest(
        signature.lower(), digest.hex()
    )


def parse_api_timestamp(text: str, zone: ZoneInfo) -> float:
    """Seconds since the epoch from any of the four accepted forms."""
    text = text.strip()
    if text.isdigit():
        value = int(text)
        # 13 digits are milliseconds; seconds have 10 until the year 2286.
        return value / 1000 if len(text) >= 12 else float(value)
    if "/" in text:
        return parse_last_update(text).replace(tzinfo=zone).timestamp()
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.timestamp()


def _bearer(request: Request) -> str | None:
    scheme, _, token = (request.header("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class AccurateAuth:
    def __init__(self, model: AccurateModel) -> None:
        self.model = model
        self.api_token_revoked = False
        self._access: dict[str, float] = {}  # token -> expiry (epoch s)
        self._refresh: set[str] = set()
        self._sessions: dict[str, float] = {}  # session -> expiry (epoch s)
        self._used_codes: set[str] = set()

    @property
    def _config(self) -> AccurateConfig:
        return self.model.config.accurate

    def server_time(self) -> float:
        return time.time() + float(self._config.server_clock_offset_s)

    # ------------------------------------------------------------- failures
    def api_token_error(self, text: str) -> Response:
        """401 with one of the guide's texts, in the configured body shape."""
        if self._config.auth_error_key == "message":
            return json_response({"s": False, "message": text}, status=401)
        return json_response({"s": False, "d": [text]}, status=401)

    @staticmethod
    def session_error() -> Response:
        return json_response({"s": False, "d": [SESSION_INVALID]}, status=401)

    @staticmethod
    def token_error() -> Response:
        return json_response({"error": "invalid_token"}, status=401)

    # ---------------------------------------------------------- data calls
    def check(self, request: Request) -> Response | None:
        """None when the call may proceed, else the refusal to send."""
        token = _bearer(request)
        if token is None:
            return self.api_token_error(UNAUTHORIZED)
        if token in self._access:
            return self._check_oauth(request, token)
        return self._check_api_token(request, token)

    def _check_api_token(self, request: Request, token: str) -> Response | None:
        if token != self._config.api_token or self.api_token_revoked:
            return self.api_token_error(REVOKED)
        problem = self._timestamp_problem(request.header("x-api-timestamp"))
        if problem is None:
            problem = self._signature_problem(request)
        return None if problem is None else self.api_token_error(problem)

    def _timestamp_problem(self, stamp: str | None) -> str | None:
        if not stamp:
            return TIMESTAMP_REQUIRED
        try:
            sent = parse_api_timestamp(stamp, self.model.zone)
        except ValueError:
            return TIMESTAMP_INVALID
        if abs(self.server_time() - sent) > self._config.timestamp_tolerance_s:
            return TIMESTAMP_SKEW
        return None

    def _signature_problem(self, request: Request) -> str | None:
        signature = request.header("x-api-signature")
        if not signature:
            return SIGNATURE_REQUIRED
        stamp = request.header("x-api-timestamp") or ""
        if not signature_matches(self._config.signature_secret, stamp, signature):
            return SIGNATURE_INVALID
        return None

    def _check_oauth(self, request: Request, token: str) -> Response | None:
        if self._access[token] <= time.time():
            return self.token_error()
        session = request.header("x-session-id")
        if not session or self._sessions.get(session, 0.0) <= time.time():
            return self.session_error()
        return None

    def check_access_token(self, request: Request) -> Response | None:
        """For account-host calls that need only the OAuth access token."""
        token = _bearer(request)
        if token is None or self._access.get(token, 0.0) <= time.time():
            return self.token_error()
        return None

    # ------------------------------------------------------------ lifecycle
    def expire_access_tokens(self) -> None:
        self._access = dict.fromkeys(self._access, 0.0)

    def expire_sessions(self) -> None:
        self._sessions = dict.fromkeys(self._sessions, 0.0)

    # ------------------------------------------------------- account host
    def oauth_token(self, request: Request) -> Response:
        """POST /oauth/token: authorization_code or refresh_token grants."""
        if not self._client_ok(request):
            return json_response({"error": "invalid_client"}, status=401)
        params = request.params()
        grant = params.get("grant_type")
        if grant == "authorization_code":
            code = params.get("code", "")
            if not code or code in self._used_codes:
                return json_response({"error": "invalid_grant"}, status=400)
            self._used_codes.add(code)
            self.model.stats.token_grants += 1
        elif grant == "refresh_token":
            if params.get("refresh_token") not in self._refresh:
                return json_response({"error": "invalid_grant"}, status=400)
            # Refreshing rotates both tokens; the old refresh token dies.
            self._refresh.discard(params["refresh_token"])
            self.model.stats.token_refreshes += 1
        else:
            return json_response({"error": "unsupported_grant_type"}, status=400)
        return json_response(self._issue_tokens())

    def _client_ok(self, request: Request) -> bool:
        scheme, _, encoded = (request.header("authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            pair = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = f"{self._config.oauth_client_id}:{self._config.oauth_client_secret}"
        return hmac.compare_digest(pair, expected)

    def _issue_tokens(self) -> dict[str, Any]:
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self._access[access] = time.time() + self._config.oauth_token_ttl_s
        self._refresh.add(refresh)
        scope = " ".join(
            f"{path.replace('-', '_')}_view" for path in ("item", "warehouse", *KINDS)
        )
        return {
            "access_token": access,
            "token_type": "bearer",
            "refresh_token": refresh,
            "expires_in": int(self._config.oauth_token_ttl_s),
            "scope": scope,
            "user": {"id": 100000, "name": "Simulator", "email": "sim@example.com"},
        }

    def open_db(self, request: Request, host: str) -> Response:
        refused = self.check_access_token(request)
        if refused is not None:
            return refused
        if request.params().get("id") != str(self._config.database_id):
            return json_response({"s": False, "d": ["Data usaha tidak ditemukan"]})
        self.model.stats.open_db_calls += 1
        session = self._new_session()
        return json_response(
            {
                "s": True,
                "d": ["Proses Berhasil Dilakukan"],
                "session": session,
                "host": host,
                "admin": True,
                "accessibleUntil": self._until(),
                "trial": False,
            }
        )

    def refresh_session(self, request: Request, host: str) -> Response:
        refused = self.check_access_token(request)
        if refused is not None:
            return refused
        params = request.params()
        old = params.get("session", "")
        if (
            params.get("id") != str(self._config.database_id)
            or old not in self._sessions
        ):
            return json_response({"s": False, "d": [SESSION_INVALID]})
        del self._sessions[old]
        self.model.stats.session_refreshes += 1
        session = self._new_session()
        body = {"session": session, "host": host, "accessibleUntil": self._until()}
        return json_response({"s": True, "d": body})

    def _new_session(self) -> str:
        session = secrets.token_hex(16)
        self._sessions[session] = time.time() + self._config.session_ttl_s
        return session

    def _until(self) -> str:
        expiry = datetime.fromtimestamp(self.server_time(), self.model.zone)
        return format_date((expiry + timedelta(days=365)).date())
