"""Forstok auth and bulk quantity pushes (forstok-api.md §2, §3, §6)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest

from daemon.simulator import SimConfig, Simulator
from simulator.simhttp import Forstok, plain_client, small_shop


@pytest.fixture
def sim_config() -> SimConfig:
    """A catalogue: SKU ABC-01 on two Forstok items (C14), WH 1 and 2."""
    config = small_shop()
    config.catalogue.forstok_products = {"ABC-01": [111, 222], "XYZ-9": [333]}
    config.catalogue.forstok_warehouses = {"WH-1": 1, "WH-2": 2}
    return config


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "==="))
    return claims


async def test_auth_issues_a_jwt_with_exp(sim: Simulator, forstok: Forstok) -> None:
    """The token is a three-part JWT whose `exp` is the configured TTL away."""
    token = await forstok.token()
    claims = _claims(token)
    assert abs(claims["exp"] - time.time() - 3600) < 5


async def test_bad_credentials_and_expired_token_give_401(
    sim: Simulator, forstok: Forstok
) -> None:
    """Wrong secret: 401. A token past its exp, or expired by the
    simulator, is refused on the next push."""
    refused = await forstok.client.post(
        sim.forstok_auth_url, params={"id": "1001", "secret_key": "x", "type": "seller"}
    )
    sim.config.forstok.token_ttl_s = 0
    stale = await forstok.token()
    sim.config.forstok.token_ttl_s = 3600
    fresh = await forstok.token()
    sim.forstok.expire_tokens()
    rows = [{"sku": "ABC-01", "warehouse_id": 1, "quantity": 1}]
    assert refused.status_code == 401
    assert refused.json()["status"] == "ERROR"
    assert (await forstok.push(rows, stale)).status_code == 401
    assert (await forstok.push(rows, fresh)).status_code == 401
    assert (await forstok.push(rows)).status_code == 200


def _rows() -> list[dict[str, Any]]:
    """One good row and one of each refusal of §6 item 3."""
    return [
        {"sku": "ABC-01", "warehouse_id": 1, "quantity": 7},
        {"sku": "NOPE", "warehouse_id": 1, "quantity": 1},
        {"sku": "XYZ-9", "warehouse_id": 99, "quantity": 1},
        {"sku": "XYZ-9", "warehouse_id": 1, "quantity": -1},
        {"sku": "XYZ-9", "warehouse_id": 1, "quantity": 1.5},
        {"sku": "XYZ-9", "quantity": 1},
    ]


async def test_partial_mode_applies_good_rows(sim: Simulator, forstok: Forstok) -> None:
    """200 with `errors` naming each bad row; the good row is applied."""
    response = await forstok.push(_rows())
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ERROR"
    assert [e["message"] for e in body["errors"]] == [
        "variant not found",
        "warehouse not found",
        "quantity must not be negative",
        "quantity must be an integer",
        "warehouse_id is required",
    ]
    assert sim.forstok.on_hand_snapshot() == {("ABC-01", 1): 7}
    assert sim.forstok.items_for("ABC-01") == [111, 222]


async def test_all_or_nothing_mode_applies_nothing(
    sim: Simulator, forstok: Forstok
) -> None:
    """422 with the errors, and no row applied."""
    sim.config.forstok.mode = "all_or_nothing"
    response = await forstok.push(_rows())
    clean = await forstok.push(_rows()[:1])
    assert response.status_code == 422
    assert len(response.json()["errors"]) == 5
    assert clean.json() == {"status": "OK"}
    assert [p.new for p in sim.forstok.history_of()] == [7]


async def test_silent_drop_and_lost_response(sim: Simulator, forstok: Forstok) -> None:
    """silent_drop says OK for bad rows; lost_response applies, then hangs."""
    sim.config.forstok.mode = "silent_drop"
    dropped = await forstok.push(_rows())
    sim.config.forstok.mode = "lost_response"
    token = await forstok.token()
    rows = [{"sku": "XYZ-9", "warehouse_id": 2, "quantity": 4}]
    with pytest.raises(httpx.ReadTimeout):
        await forstok.client.patch(
            sim.forstok_quantity_url,
            params={"user_id": "1001", "auth_type": "jwt"},
            headers={"Authorization": f"Bearer {token}"},
            json={"variants": rows},
            timeout=0.3,
        )
    assert dropped.json() == {"status": "OK"}
    assert sim.forstok.on_hand("XYZ-9", 2) == 4


async def test_malformed_body_and_method_override(
    sim: Simulator, forstok: Forstok
) -> None:
    """A malformed body is 400 with nothing applied; POST with the override
    header works like PATCH; a plain POST does not."""
    token = await forstok.token()
    common: dict[str, Any] = {
        "params": {"user_id": "1001", "auth_type": "jwt"},
        "headers": {"Authorization": f"bearer {token}"},
    }
    url = sim.forstok_quantity_url
    bad = await forstok.client.patch(url, content=b"{not json", **common)
    no_variants = await forstok.client.patch(url, json={"rows": []}, **common)
    body = {"variants": [{"sku": "ABC-01", "warehouse_id": 2, "quantity": 3}]}
    plain = await forstok.client.post(url, json=body, **common)
    headers = {**common["headers"], "X-HTTP-Method-Override": "PATCH"}
    overridden = await forstok.client.post(
        url, json=body, params=common["params"], headers=headers
    )
    assert bad.status_code == 400
    assert no_variants.status_code == 400
    assert plain.status_code == 405
    assert overridden.json() == {"status": "OK"}
    assert sim.forstok.on_hand_snapshot() == {("ABC-01", 2): 3}


async def test_last_write_wins_and_history(sim: Simulator, forstok: Forstok) -> None:
    """Duplicates in a body: the last wins. History records old and new."""
    token = await forstok.token()
    await forstok.push([{"sku": "ABC-01", "warehouse_id": 1, "quantity": 5}], token)
    await forstok.push(
        [
            {"sku": "ABC-01", "warehouse_id": 1, "quantity": 9},
            {"sku": "ABC-01", "warehouse_id": 1, "quantity": 2},
        ],
        token,
    )
    history = [(p.old, p.new) for p in sim.forstok.history_of("ABC-01")]
    assert history == [(None, 5), (5, 9), (9, 2)]
    assert sim.forstok.on_hand("ABC-01", 1) == 2


async def test_reserved_makes_available_differ(
    sim: Simulator, forstok: Forstok
) -> None:
    """Reserved stock changes on its own; Available = On hand - Reserved."""
    await forstok.push([{"sku": "XYZ-9", "warehouse_id": 1, "quantity": 2}])
    sim.forstok.set_reserved("XYZ-9", 1, 3)
    position = sim.forstok.positions[("XYZ-9", 1)]
    assert (position.on_hand, position.reserved, position.available) == (2, 3, -1)


async def test_empty_catalogue_accepts_any_sku() -> None:
    """With no products configured, every unknown SKU is created on push."""
    sim = Simulator(small_shop())
    async with sim.running(), plain_client() as client:
        forstok = Forstok(client, sim)
        token = await forstok.token()
        for sku in ("NEW-1", "NEW-2"):
            rows = [{"sku": sku, "warehouse_id": 2, "quantity": 1}]
            assert (await forstok.push(rows, token)).json() == {"status": "OK"}
    assert sorted(sim.forstok.products) == ["NEW-1", "NEW-2"]


@pytest.mark.parametrize(
    ("mode", "status", "applied"),
    [("multi_status", 207, []), ("multi_status_applied", 207, [7])],
)
async def test_multi_status_modes(
    sim: Simulator, forstok: Forstok, mode: str, status: int, applied: list[int]
) -> None:
    """207 with `errors` naming each bad row: nothing applied, or (the RFC
    4918 reading) the good row applied. A clean batch is 200 OK."""
    sim.config.forstok.mode = mode  # type: ignore[assignment]
    response = await forstok.push(_rows())
    clean = await forstok.push([{"sku": "XYZ-9", "warehouse_id": 2, "quantity": 3}])
    assert response.status_code == status
    assert response.json()["status"] == "ERROR"
    assert [e["sku"] for e in response.json()["errors"]] == [
        "NOPE",
        "XYZ-9",
        "XYZ-9",
        "XYZ-9",
        "XYZ-9",
    ]
    assert clean.status_code == 200
    assert clean.json() == {"status": "OK"}
    assert [p.new for p in sim.forstok.history_of("ABC-01")] == applied


async def test_bare_error_mode_names_no_row_and_applies_nothing(
    sim: Simulator, forstok: Forstok
) -> None:
    """200 with status ERROR and only a message: no row named, none applied."""
    sim.config.forstok.mode = "bare_error"
    response = await forstok.push(_rows())
    assert response.status_code == 200
    assert response.json() == {"status": "ERROR", "message": "update failed"}
    assert sim.forstok.history_of() == []
