"""Helpers for the simulator's own tests: a small shop and raw HTTP clients.

These tests talk to the simulator with plain httpx, never through the
daemon's clients, so they check the simulator against the reference alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx

from daemon.simulator import ItemSpec, SimConfig, Simulator

# The simulator speaks plain HTTP; one shared TLS context spares every
# client the ~50 ms of loading a CA bundle it will never use.
_TLS = ssl.create_default_context()


def plain_client(**options: Any) -> httpx.AsyncClient:
    """An httpx client for loopback tests."""
    return httpx.AsyncClient(verify=_TLS, **options)


def small_shop() -> SimConfig:
    """Items A to D and a service in GDG-1..3: A@GDG-1 = 10, B@GDG-1 = 6."""
    config = SimConfig(seed=3)
    config.catalogue.items = [
        ItemSpec("A", opening={"GDG-1": Decimal(10)}),
        ItemSpec("B", opening={"GDG-1": Decimal(6)}),
        ItemSpec("C"),
        ItemSpec("D", unit="KG"),
        ItemSpec("SVC", item_type="SERVICE"),
    ]
    # Limits are tested on purpose in test_limits.py; elsewhere they only
    # slow the suite down.
    config.accurate.rate_per_second = 0
    config.accurate.max_in_flight = 0
    config.forstok.requests_per_minute = 0
    config.forstok.max_in_flight = 0
    return config


def sign(secret: str, stamp: str, encoding: str = "base64") -> str:
    digest = hmac.new(secret.encode(), stamp.encode(), hashlib.sha256).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


class ApiToken(httpx.Auth):
    """Signs every request the way the API-token guide describes."""

    def __init__(
        self,
        token: str,
        secret: str,
        stamp: Callable[[], str] = lambda: str(int(time.time())),
        encoding: str = "base64",
    ) -> None:
        self.token, self.secret = token, secret
        self.stamp, self.encoding = stamp, encoding

    def auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        stamp = self.stamp()
        request.headers["Authorization"] = f"Bearer {self.token}"
        request.headers["X-Api-Timestamp"] = stamp
        request.headers["X-Api-Signature"] = sign(self.secret, stamp, self.encoding)
        yield request


def api_token(sim: Simulator, **options: Any) -> ApiToken:
    config = sim.config.accurate
    return ApiToken(config.api_token, config.signature_secret, **options)


def query(**params: Any) -> str:
    """A query string with literal commas, as reference §5 requires."""
    return urlencode({k.replace("__", "."): v for k, v in params.items()}, safe=",|")


@dataclass
class Forstok:
    client: httpx.AsyncClient
    sim: Simulator

    async def token(self) -> str:
        settings = self.sim.config.forstok
        params = {"id": settings.seller_id, "secret_key": settings.secret_key}
        response = await self.client.post(
            self.sim.forstok_auth_url, params={**params, "type": "seller"}
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["data"]["token"]
        return token

    async def push(
        self, variants: list[dict[str, Any]], token: str | None = None
    ) -> httpx.Response:
        bearer = token if token is not None else await self.token()
        return await self.client.patch(
            self.sim.forstok_quantity_url,
            params={"user_id": self.sim.config.forstok.seller_id, "auth_type": "jwt"},
            headers={"Authorization": f"Bearer {bearer}"},
            json={"variants": variants},
        )
