"""API-token credentials on the real network: refused, skewed, moved.

A refused token or signature is reported once per try with what the operator
must do, and tried again only every `accurate.credential_retry_interval`
(one second here); a timestamp refused for clock difference is repaired from
the server's `Date`; a database that moved is followed and remembered.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from harness import mismatches
from network_support import (
    engine_on,
    events,
    in_sync,
    network_settings,
    plan,
    requests_to,
    sell,
)
from structlog.testing import capture_logs

from daemon.accurate import ACTION_NEW_API_CREDENTIAL, ACTION_SIGNATURE
from daemon.kinds import DOCUMENT_KINDS
from daemon.service import DATA_HOST_KEY
from daemon.simulator import FaultAction, Simulator

Breakage = Callable[[Simulator], Callable[[], None]]


def revoke(sim: Simulator) -> Callable[[], None]:
    sim.accurate_auth.api_token_revoked = True

    def undo() -> None:
        sim.accurate_auth.api_token_revoked = False

    return undo


def change_secret(sim: Simulator) -> Callable[[], None]:
    real = sim.config.accurate.signature_secret
    sim.config.accurate.signature_secret = "a-secret-we-were-never-told"

    def undo() -> None:
        sim.config.accurate.signature_secret = real

    return undo


@pytest.mark.parametrize(
    ("breakage", "action"),
    [(revoke, ACTION_NEW_API_CREDENTIAL), (change_secret, ACTION_SIGNATURE)],
    ids=["revoked-token", "invalid-signature"],
)
async def test_refused_credential_is_retried_rarely(
    sim: Simulator, tmp_path: Path, breakage: Breakage, action: str
) -> None:
    """A refused credential costs one request per retry interval, however
    often the engine polls; each try is logged once with the operator's
    action, and the first poll after the fix catches up."""
    async with engine_on(network_settings(sim, tmp_path)) as engine:
        await in_sync(sim, engine)
        undo = breakage(sim)
        stamp = sell(sim)
        sim.requests.reset()

        with capture_logs() as logs:
            for _ in range(3):
                await engine.poll()
            refused_polls = sim.requests.count("accurate")
            blocked = engine.accurate.credentials_blocked()
            await anyio.sleep(1.1)
            await engine.poll()
            undo()
            await anyio.sleep(1.1)
            await engine.poll()

        cursor = (await engine.state.cursors())["sales_invoice"]

    assert refused_polls == 1
    assert blocked
    rejected = events(logs, "accurate_credentials_rejected")
    assert len(rejected) == 2  # the first refusal and the one retry
    assert {e["action"] for e in rejected} == {action}
    assert {e["retry_in_s"] for e in rejected} == {1.0}
    assert len(events(logs, "accurate_credentials_accepted")) == 1
    # The refusal stops every kind of a poll, but not with a line per kind:
    # at most one for the refused request and one for the kinds held back.
    failed = events(logs, "poll_kind_failed")
    assert len(failed) <= 2 * 4  # the three refused polls and the one retry
    stopped = sum(len(e["kinds"]) for e in failed)
    assert stopped == 4 * (len(DOCUMENT_KINDS) + 1)  # and the item poll
    assert mismatches(sim) == {}
    assert cursor == stamp


@pytest.mark.parametrize("how", ["server-clock", "fault"])
async def test_timestamp_refused_for_clock_difference_is_retried_once(
    sim: Simulator, tmp_path: Path, how: str
) -> None:
    """Accurate refusing X-Api-Timestamp as too far off costs one refused
    request: the offset comes from its Date header and every later request
    is signed with it."""
    if how == "server-clock":
        sim.config.accurate.server_clock_offset_s = 3600.0
    else:
        sim.install_faults(plan(FaultAction("timestamp_skew"), count=1))

    with capture_logs() as logs:
        async with engine_on(network_settings(sim, tmp_path)) as engine:
            await in_sync(sim, engine)
            stamp = sell(sim)
            await engine.poll()
            cursor = (await engine.state.cursors())["sales_invoice"]

    assert sim.requests.count("accurate", status=401) == 1
    (offset,) = events(logs, "accurate_clock_offset")
    expected = 3600.0 if how == "server-clock" else 0.0
    assert abs(offset["offset_s"] - expected) <= 2.0
    assert cursor == stamp
    assert mismatches(sim) == {}


async def test_moved_database_is_followed_saved_and_used_after_restart(
    sim: Simulator, tmp_path: Path
) -> None:
    """A 308 sends the request to the new data host with fresh headers; the
    host is saved in the state, and after a restart every request goes
    straight there, without a host lookup."""
    settings = network_settings(sim, tmp_path)
    old_host, new_host = sim.accurate_data_urls
    async with engine_on(settings) as engine:
        await in_sync(sim, engine)
        stamp = sell(sim)
        moved = FaultAction("redirect_other_host")
        sim.install_faults(plan(moved, endpoint="*/sales-invoice/list.do", count=1))
        with capture_logs() as logs:
            await engine.poll()
        saved = await engine.state.get_meta(DATA_HOST_KEY)
        cursor = (await engine.state.cursors())["sales_invoice"]

    assert saved == new_host
    assert cursor == stamp
    assert mismatches(sim) == {}
    # Reads already on their way to the old host are moved too, one by one.
    first = next(e for e in sim.requests.entries("accurate") if e.status == 308)
    after = [e for e in sim.requests.entries("accurate") if e.seq > first.seq]
    assert {e.status for e in after if e.listener == "accurate-data-1"} <= {308}
    assert {e.status for e in after if e.listener == "accurate-data-2"} == {200}
    (logged,) = events(logs, "accurate_data_host")
    assert logged["moved"] is True

    sim.requests.reset()
    second = sell(sim, item="SKU-002")
    async with engine_on(settings) as engine:
        await engine.poll()
        cursor = (await engine.state.cursors())["sales_invoice"]

    assert cursor == second
    assert mismatches(sim) == {}
    assert {e.listener for e in sim.requests.entries("accurate")} == {"accurate-data-2"}
    assert requests_to(sim, "accurate", "/api/api-token.do") == []
    assert old_host != new_host
