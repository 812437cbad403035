"""Accurate authentication: API token (reference §2), OAuth (§3), 308 (§1)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import anyio
import httpx
import pytest

from daemon.simulator import Simulator
from daemon.simulator.accurate_auth import parse_api_timestamp, signature_matches
from simulator.simhttp import api_token, plain_client, sign

VECTOR_STAMP = "02/11/2023 09:01:01"
VECTOR_SECRET = "31d49b3dc632614495ff8071e5be44a1"
VECTOR_BASE64 = "8NxvylwwMcjGyzVXK0qbwNvFFuzHpwE9tECllVwLkbo="
VECTOR_HEX = "f0dc6fca5c3031c8c6cb35572b4a9bc0dbc516ecc7a7013db440a5955c0b91ba"
JAKARTA = ZoneInfo("Asia/Jakarta")


def test_signature_matches_the_official_test_vector() -> None:
    """The guide's vector verifies in Base64 and in hex; a wrong one does not."""
    assert sign(VECTOR_SECRET, VECTOR_STAMP) == VECTOR_BASE64
    assert signature_matches(VECTOR_SECRET, VECTOR_STAMP, VECTOR_BASE64)
    assert signature_matches(VECTOR_SECRET, VECTOR_STAMP, VECTOR_HEX)
    assert not signature_matches(VECTOR_SECRET, "02/11/2023 09:01:02", VECTOR_BASE64)


async def test_official_vector_accepted_over_http(sim: Simulator) -> None:
    """With the server clock at the vector's time, its headers are accepted."""
    sim.config.accurate.signature_secret = VECTOR_SECRET
    vector_time = datetime(2023, 11, 2, 9, 1, 1, tzinfo=JAKARTA).timestamp()
    sim.config.accurate.server_clock_offset_s = vector_time - time.time()
    headers = {
        "Authorization": f"Bearer {sim.config.accurate.api_token}",
        "X-Api-Timestamp": VECTOR_STAMP,
        "X-Api-Signature": VECTOR_BASE64,
    }
    async with plain_client() as client:
        response = await client.get(
            sim.accurate_account_url + "/api/api-token.do", headers=headers
        )
    assert response.status_code == 200, response.text


def test_timestamp_forms_all_parse_to_the_same_moment() -> None:
    """The four forms of reference §2 name one instant."""
    moment = datetime(2023, 11, 2, 2, 1, 1, tzinfo=UTC).timestamp()
    forms = [
        "02/11/2023 09:01:01",  # WIB wall clock
        "2023-11-02T02:01:01Z",
        str(int(moment)),
        str(int(moment * 1000)),
    ]
    assert {parse_api_timestamp(f, JAKARTA) for f in forms} == {moment}


@pytest.mark.parametrize(
    "stamp",
    [
        lambda: str(int(time.time())),
        lambda: str(int(time.time() * 1000)),
        lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        lambda: datetime.now(JAKARTA).strftime("%d/%m/%Y %H:%M:%S"),
    ],
    ids=["unix-s", "unix-ms", "iso", "wall-clock"],
)
@pytest.mark.parametrize("encoding", ["base64", "hex"])
async def test_signed_call_accepted_in_every_form(
    sim: Simulator, stamp: Callable[[], str], encoding: str
) -> None:
    """Every timestamp form and both signature encodings are accepted."""
    auth = api_token(sim, stamp=stamp, encoding=encoding)
    async with plain_client(auth=auth) as client:
        response = await client.get(
            sim.accurate_data_urls[0] + "/accurate/api/warehouse/list.do"
        )
    assert response.status_code == 200
    assert response.json()["s"] is True


async def _refusal(sim: Simulator, headers: dict[str, str]) -> tuple[int, list[str]]:
    async with plain_client() as client:
        response = await client.get(
            sim.accurate_data_urls[0] + "/accurate/api/warehouse/list.do",
            headers=headers,
        )
    body = response.json()
    return response.status_code, body.get("d") or [body.get("message")]


async def test_refusals_carry_the_guide_texts(sim: Simulator) -> None:
    """Missing or wrong headers give 401 with the text naming the problem."""
    config = sim.config.accurate
    now = str(int(time.time()))
    good = {
        "Authorization": f"Bearer {config.api_token}",
        "X-Api-Timestamp": now,
        "X-Api-Signature": sign(config.signature_secret, now),
    }
    old = str(int(time.time()) - 601)
    cases = {
        "Unauthorized": {k: v for k, v in good.items() if k != "Authorization"},
        "Invalid or Revoked API Token": {**good, "Authorization": "Bearer other"},
        "Header X-Api-Timestamp is required": {
            k: v for k, v in good.items() if k != "X-Api-Timestamp"
        },
        "Header X-Api-Timestamp invalid": {**good, "X-Api-Timestamp": "yesterday"},
        "Header X-Api-Signature is required": {
            k: v for k, v in good.items() if k != "X-Api-Signature"
        },
        "Header X-Api-Signature invalid": {**good, "X-Api-Signature": "AAAA"},
        "Header X-Api Timestamp difference more than 600 seconds": {
            **good,
            "X-Api-Timestamp": old,
            "X-Api-Signature": sign(config.signature_secret, old),
        },
    }
    for expected, headers in cases.items():
        status, texts = await _refusal(sim, headers)
        assert status == 401, expected
        assert texts[0].startswith(expected), texts


async def test_revoked_token_and_message_shape(sim: Simulator) -> None:
    """A revoked token is refused; the `message` variant moves the text."""
    sim.accurate_auth.api_token_revoked = True
    sim.config.accurate.auth_error_key = "message"
    async with plain_client(auth=api_token(sim)) as client:
        response = await client.get(sim.accurate_account_url + "/api/api-token.do")
    assert response.status_code == 401
    assert response.json() == {"s": False, "message": "Invalid or Revoked API Token"}


async def test_api_token_do_reports_the_serving_host(sim: Simulator) -> None:
    """api-token.do names the data host under either key, by GET or POST."""
    async with plain_client(auth=api_token(sim)) as client:
        url = sim.accurate_account_url + "/api/api-token.do"
        first = (await client.get(url)).json()["d"]
        sim.config.accurate.api_token_db_key = "data usaha"
        sim.config.accurate.api_token_methods = ("POST",)
        refused = await client.get(url)
        second = (await client.post(url)).json()["d"]
    assert first["database"]["host"] == sim.accurate_data_urls[0]
    assert first["tokenType"] == "api"
    assert refused.status_code == 405
    assert second["data usaha"]["id"] == sim.config.accurate.database_id


async def test_database_moved_answers_308_to_the_second_host(sim: Simulator) -> None:
    """After a move, host 1 redirects every data call and host 2 serves."""
    sim.accurate.current_host = 1
    async with plain_client(auth=api_token(sim)) as client:
        path = "/accurate/api/item/list.do?fields=id,no"
        moved = await client.get(sim.accurate_data_urls[0] + path)
        served = await client.get(sim.accurate_data_urls[1] + path)
        discovery = await client.get(sim.accurate_account_url + "/api/api-token.do")
    assert moved.status_code == 308
    assert moved.headers["Location"] == sim.accurate_data_urls[1] + path
    assert served.json()["s"] is True
    assert discovery.json()["d"]["database"]["host"] == sim.accurate_data_urls[1]


def _basic(sim: Simulator) -> dict[str, str]:
    config = sim.config.accurate
    pair = f"{config.oauth_client_id}:{config.oauth_client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


async def _oauth_session(
    client: httpx.AsyncClient, sim: Simulator
) -> tuple[str, str, str]:
    grant = await client.post(
        sim.accurate_account_url + "/oauth/token",
        data={"grant_type": "authorization_code", "code": "c1", "redirect_uri": "x"},
        headers=_basic(sim),
    )
    tokens = grant.json()
    opened = await client.get(
        sim.accurate_account_url + "/api/open-db.do",
        params={"id": sim.config.accurate.database_id},
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    body = opened.json()
    assert body["host"] == sim.accurate_data_urls[0]
    return tokens["access_token"], tokens["refresh_token"], body["session"]


async def test_oauth_flow_session_and_token_expiry(sim: Simulator) -> None:
    """Access token + session serve data; each expiry gives its own 401."""
    async with plain_client() as client:
        access, _, session = await _oauth_session(client, sim)
        url = sim.accurate_data_urls[0] + "/accurate/api/item/list.do"
        headers = {"Authorization": f"Bearer {access}", "X-Session-ID": session}
        served = await client.get(url, headers=headers)
        sim.accurate_auth.expire_sessions()
        no_session = await client.get(url, headers=headers)
        sim.accurate_auth.expire_access_tokens()
        no_token = await client.get(url, headers=headers)
    assert served.json()["s"] is True
    assert no_session.status_code == 401
    assert no_session.json() == {"s": False, "d": ["Data Session Key tidak tepat"]}
    assert no_token.status_code == 401
    assert no_token.json() == {"error": "invalid_token"}


async def test_refresh_rotates_tokens_and_is_counted(sim: Simulator) -> None:
    """A refresh grant issues new tokens once; the old refresh token dies."""
    async with plain_client() as client:
        _, refresh, session = await _oauth_session(client, sim)
        url = sim.accurate_account_url + "/oauth/token"
        body = {"grant_type": "refresh_token", "refresh_token": refresh}
        fresh = await client.post(url, data=body, headers=_basic(sim))
        again = await client.post(url, data=body, headers=_basic(sim))
        renewed = await client.get(
            sim.accurate_account_url + "/api/db-refresh-session.do",
            params={"id": sim.config.accurate.database_id, "session": session},
            headers={"Authorization": f"Bearer {fresh.json()['access_token']}"},
        )
    assert fresh.json()["refresh_token"] != refresh
    assert again.status_code == 400
    assert renewed.json()["d"]["session"] != session
    assert sim.accurate.stats.token_refreshes == 1
    assert sim.accurate.stats.session_refreshes == 1


async def test_concurrent_expired_calls_all_see_401(sim: Simulator) -> None:
    """Ten calls with an expired token all fail at once; nothing refreshes
    behind the client's back (the count stays for the client to drive)."""
    async with plain_client() as client:
        access, _, session = await _oauth_session(client, sim)
        sim.accurate_auth.expire_access_tokens()
        headers = {"Authorization": f"Bearer {access}", "X-Session-ID": session}
        statuses: list[int] = []

        async def call() -> None:
            url = sim.accurate_data_urls[0] + "/accurate/api/item/list.do"
            statuses.append((await client.get(url, headers=headers)).status_code)

        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(call)
    assert statuses == [401] * 10
    assert sim.accurate.stats.token_refreshes == 0
