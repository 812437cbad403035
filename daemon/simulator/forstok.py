"""The simulated Forstok seller: JWT auth and the bulk quantity endpoint.

Forstok keeps On hand, Reserved and Available per (SKU, warehouse id); a push
sets On hand (forstok-api.md §3). Which rows are refused, and how the refusal
is reported, follows the configured mode; the reference leaves it unknown.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, TypeGuard

from daemon.simulator.config import ForstokConfig, SimConfig
from daemon.simulator.server import Behaviour, Request, Response, json_response

AUTH_PATH = "/api/v2/auth"
QUANTITY_PATH = "/api/v2/variants/quantities.json"


@dataclass
class Position:
    on_hand: int = 0
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved  # may go negative: "Oversell"


@dataclass(frozen=True)
class Push:
    """One applied row, as Forstok's Stock History would show it."""

    sku: str
    warehouse_id: int
    old: int | None  # None when the pair was unknown before
    new: int
    time: str  # ISO-8601 from the business clock

    def as_dict(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "warehouse_id": self.warehouse_id,
            "old": self.old,
            "new": self.new,
            "time": self.time,
        }


@dataclass(frozen=True)
class RowError:
    sku: Any
    warehouse_id: Any
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "warehouse_id": self.warehouse_id,
            "message": self.message,
        }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ForstokModel:
    def __init__(self, config: SimConfig, lock: threading.RLock) -> None:
        self.config = config
        self.lock = lock
        catalogue = config.catalogue
        self.products: dict[str, list[int]] = {
            sku: list(ids) for sku, ids in catalogue.forstok_products.items()
        }
        # With no catalogue every SKU is welcome and created on first push.
        self.accept_any_sku = not self.products
        self.warehouses: dict[str, int] = dict(catalogue.forstok_warehouses)
        self.positions: dict[tuple[str, int], Position] = {
            key: Position(on_hand=value)
            for key, value in catalogue.forstok_on_hand.items()
        }
        self.history: list[Push] = []
        self._key = secrets.token_bytes(32)
        self._not_before = 0  # tokens issued earlier are refused
        self._issued = 0

    @property
    def settings(self) -> ForstokConfig:
        return self.config.forstok

    # ----------------------------------------------------------------- state
    def on_hand(self, sku: str, warehouse_id: int) -> int | None:
        with self.lock:
            position = self.positions.get((sku, warehouse_id))
            return None if position is None else position.on_hand

    def on_hand_snapshot(self) -> dict[tuple[str, int], int]:
        with self.lock:
            return {key: p.on_hand for key, p in self.positions.items()}

    def set_reserved(self, sku: str, warehouse_id: int, reserved: int) -> None:
        """Orders reserve stock independently of pushes (§6 item 6)."""
        with self.lock:
            self.positions.setdefault(
                (sku, warehouse_id), Position()
            ).reserved = reserved

    def items_for(self, sku: str) -> list[int]:
        """Forstok item ids carrying `sku` (several for C14)."""
        with self.lock:
            return list(self.products.get(sku, []))

    def history_of(self, sku: str | None = None) -> list[Push]:
        with self.lock:
            return [p for p in self.history if sku in (None, p.sku)]

    # ------------------------------------------------------------------ JWT
    def issue_token(self) -> str:
        now = int(time.time())
        self._issued += 1
        header = {"alg": "HS256", "typ": "JWT"}
        payload = {
            "sub": self.settings.seller_id,
            "iat": now,
            "exp": now + int(self.settings.token_ttl_s),
            "jti": self._issued,
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode())
            for part in (header, payload)
        )
        signature = hmac.new(self._key, signing_input.encode(), hashlib.sha256)
        return f"{signing_input}.{_b64url(signature.digest())}"

    def token_problem(self, token: str) -> str | None:
        """None for a valid, unexpired token, else why it is refused."""
        try:
            head, body, signature = token.split(".")
            expected = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256)
            if not hmac.compare_digest(_b64url_decode(signature), expected.digest()):
                return "invalid token"
            claims = json.loads(_b64url_decode(body))
        except ValueError:
            return "invalid token"
        if claims["exp"] <= time.time() or claims["jti"] <= self._not_before:
            return "token expired"
        return None

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (a mid-run expiry)."""
        with self.lock:
            self._not_before = self._issued

    # --------------------------------------------------------------- pushes
    def check_row(self, row: Any, rejected: dict[str, str]) -> RowError | None:
        if not isinstance(row, dict):
            return RowError(None, None, "variant must be an object")
        sku, warehouse_id = row.get("sku"), row.get("warehouse_id")
        problem = self._row_problem(row, sku, warehouse_id)
        if problem is None and isinstance(sku, str) and sku in rejected:
            problem = rejected[sku]
        return None if problem is None else RowError(sku, warehouse_id, problem)

    def _row_problem(
        self, row: dict[str, Any], sku: Any, warehouse_id: Any
    ) -> str | None:
        quantity = row.get("quantity")
        if not isinstance(sku, str) or not sku:
            return "sku is required"
        if warehouse_id is None:
            return "warehouse_id is required"
        if not _is_int(warehouse_id):
            return "warehouse_id must be an integer"
        if self.warehouses and warehouse_id not in self.warehouses.values():
            return "warehouse not found"
        if not self.accept_any_sku and sku not in self.products:
            return "variant not found"
        if not _is_int(quantity):
            return "quantity must be an integer"
        if quantity < 0:
            return "quantity must not be negative"
        return None

    def apply(self, sku: str, warehouse_id: int, quantity: int) -> None:
        with self.lock:
            position = self.positions.get((sku, warehouse_id))
            old = None if position is None else position.on_hand
            if position is None:
                position = self.positions[(sku, warehouse_id)] = Position()
            position.on_hand = quantity
            if self.accept_any_sku:
                self.products.setdefault(sku, [])  # auto-created variant
            moment = self.config.clock.now().isoformat()
            self.history.append(Push(sku, warehouse_id, old, quantity, moment))


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


class ForstokService:
    def __init__(self, model: ForstokModel) -> None:
        self.model = model

    def handle(self, request: Request, rejected: dict[str, str]) -> Response:
        with self.model.lock:
            if request.path == AUTH_PATH:
                return self._auth(request)
            if request.path == QUANTITY_PATH:
                return self._quantities(request, rejected)
            return _error("Not Found", 404)

    def _auth(self, request: Request) -> Response:
        if request.method != "POST":
            return _error("Method Not Allowed", 405)
        params = request.params()
        if not params.get("id") and request.body:
            params = _json_params(request.body)  # one client sends a JSON body
        settings = self.model.settings
        good = (
            params.get("id") == settings.seller_id
            and hmac.compare_digest(params.get("secret_key", ""), settings.secret_key)
            and params.get("type", "seller") == "seller"
        )
        if not good:
            return _error("Invalid credentials", 401)
        return json_response({"data": {"token": self.model.issue_token()}})

    def _quantities(self, request: Request, rejected: dict[str, str]) -> Response:
        override = (request.header("x-http-method-override") or "").upper()
        if request.method != "PATCH" and not (
            request.method == "POST" and override == "PATCH"
        ):
            return _error("Method Not Allowed", 405)
        refused = self._auth_problem(request)
        if refused is not None:
            return _error(refused, 401)
        try:
            rows = _variants(request.body)
        except ValueError as error:
            return _error(str(error), self.model.settings.malformed_status)
        return self._push(rows, rejected)

    def _auth_problem(self, request: Request) -> str | None:
        scheme, _, token = (request.header("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "missing token"
        if request.params().get("user_id") != self.model.settings.seller_id:
            return "user_id does not match"
        return self.model.token_problem(token.strip())

    def _push(self, rows: list[Any], rejected: dict[str, str]) -> Response:
        mode = self.model.settings.mode
        checked = [(row, self.model.check_row(row, rejected)) for row in rows]
        errors = [error.as_dict() for _, error in checked if error is not None]
        if errors and mode in _REFUSING:
            return _refusal(mode, errors)
        for row, error in checked:
            if error is None:  # in body order: the last duplicate row wins
                self.model.apply(row["sku"], row["warehouse_id"], row["quantity"])
        if mode == "lost_response":
            return Response(behaviour=Behaviour.HANG)
        if errors and mode == "partial":
            return json_response({"status": "ERROR", "errors": errors})
        if errors and mode == "multi_status_applied":
            return json_response({"status": "ERROR", "errors": errors}, status=207)
        return json_response({"status": "OK"})


# Modes that refuse a whole batch holding a bad row: nothing of it is applied.
_REFUSING = frozenset({"all_or_nothing", "multi_status", "bare_error"})


def _refusal(mode: str, errors: list[dict[str, Any]]) -> Response:
    """The answer to a batch refused whole, in the shape `mode` assumes."""
    if mode == "bare_error":
        # Like FW's check of `status` alone: no row named, nothing to go by.
        return json_response({"status": "ERROR", "message": "update failed"})
    status = 207 if mode == "multi_status" else 422
    return json_response({"status": "ERROR", "errors": errors}, status=status)


def _variants(body: bytes) -> list[Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError("malformed JSON") from error
    if not isinstance(parsed, dict) or not isinstance(parsed.get("variants"), list):
        raise ValueError("variants is required")
    variants: list[Any] = parsed["variants"]
    return variants


def _json_params(body: bytes) -> dict[str, str]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(k): str(v) for k, v in parsed.items()}


def _error(message: str, status: int) -> Response:
    return json_response({"status": "ERROR", "message": message}, status=status)
