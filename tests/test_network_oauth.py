"""`accurate.auth: oauth` end to end: open-db, X-Session-ID, refreshes.

The operator authorises stocksync once and puts the tokens in the config.
From then on the daemon opens the database, renews an expired session or
access token by itself (once, however many reads fail together), and keeps
each rotated pair in the state database, because the refresh token in the
config file dies the first time it is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
from harness import mismatches
from network_support import (
    authorize,
    engine_on,
    events,
    in_sync,
    network_settings,
    oauth_section,
    sell,
)
from structlog.testing import capture_logs

from daemon.accurate import OAuthTokens, restored_oauth_tokens, saved_oauth_tokens
from daemon.config import Secret, Settings
from daemon.service import OAUTH_TOKENS_KEY
from daemon.simulator import Simulator
from daemon.sync import Engine


async def oauth_settings(sim: Simulator, tmp_path: Path) -> tuple[Settings, str]:
    access, refresh = await authorize(sim)
    section = oauth_section(sim, access, refresh)
    return network_settings(sim, tmp_path, accurate=section), refresh


async def ten_reads(engine: Engine) -> list[dict[str, Any]]:
    """Ten concurrent detail reads of the first sales invoice."""
    results: list[dict[str, Any]] = []

    async def read() -> None:
        results.append(await engine.accurate.detail("sales-invoice", 100))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(read)
    return results


async def test_oauth_runs_end_to_end_and_keeps_rotated_tokens(
    sim: Simulator, tmp_path: Path
) -> None:
    """open-db gives the session every data call sends; an expired session
    and an expired access token are each renewed once; the rotated tokens are
    saved, never logged, and a restart uses them."""
    settings, configured_refresh = await oauth_settings(sim, tmp_path)
    stats = sim.accurate.stats

    with capture_logs() as logs:
        async with engine_on(settings) as engine:
            await in_sync(sim, engine)
            assert stats.open_db_calls == 1

            sim.accurate_auth.expire_sessions()
            sell(sim)
            await engine.poll()
            assert (stats.session_refreshes, stats.token_refreshes) == (1, 0)

            sim.accurate_auth.expire_access_tokens()
            stamp = sell(sim, item="SKU-002")
            await engine.poll()
            assert stats.token_refreshes == 1
            saved = json.loads(await engine.state.get_meta(OAUTH_TOKENS_KEY) or "{}")
            cursor = (await engine.state.cursors())["sales_invoice"]

    assert cursor == stamp
    assert mismatches(sim) == {}
    assert saved["refresh_token"] != configured_refresh
    assert len(events(logs, "accurate_session_refreshed")) == 1
    assert len(events(logs, "accurate_token_refreshed")) == 1
    rendered = repr(logs)
    for secret in (saved["access_token"], saved["refresh_token"], configured_refresh):
        assert secret not in rendered

    # The config still holds the first pair; its refresh token is dead.
    second = sell(sim, item="SKU-003")
    async with engine_on(settings) as engine:
        await engine.poll()
        cursor = (await engine.state.cursors())["sales_invoice"]
    assert cursor == second
    assert mismatches(sim) == {}
    assert stats.token_refreshes == 1


async def test_ten_reads_on_an_expired_credential_refresh_once(
    sim: Simulator, tmp_path: Path
) -> None:
    """Ten reads failing together on an expired access token make exactly one
    token refresh, and on an expired session exactly one session refresh;
    all ten reads succeed each time."""
    settings, _ = await oauth_settings(sim, tmp_path)
    sell(sim)
    stats = sim.accurate.stats
    sim.requests.reset()

    async with engine_on(settings) as engine:
        sim.accurate_auth.expire_access_tokens()
        after_token = await ten_reads(engine)
        token_refreshes = stats.token_refreshes

        sim.accurate_auth.expire_sessions()
        after_session = await ten_reads(engine)

    assert len(after_token) == len(after_session) == 10
    assert {r["id"] for r in after_token + after_session} == {100}
    assert token_refreshes == 1
    assert (stats.token_refreshes, stats.session_refreshes) == (1, 1)
    assert sim.requests.count("accurate", "/oauth/token") == 1
    assert sim.requests.count("accurate", "/api/db-refresh-session.do") == 1


def test_newly_configured_tokens_win_over_saved_ones(
    sim: Simulator, tmp_path: Path
) -> None:
    """Saved tokens are used while the config holds the pair they came from;
    once the operator configures a newly authorised pair, that pair wins."""
    first = network_settings(
        sim, tmp_path, accurate=oauth_section(sim, "access-1", "refresh-1")
    )
    again = network_settings(
        sim, tmp_path, accurate=oauth_section(sim, "access-2", "refresh-2")
    )
    rotated = OAuthTokens(Secret("access-9"), Secret("refresh-9"))

    saved = saved_oauth_tokens(rotated, first.accurate)

    assert restored_oauth_tokens(saved, first.accurate) == rotated
    assert restored_oauth_tokens(saved, again.accurate) is None
    assert restored_oauth_tokens("not json", first.accurate) is None
    assert restored_oauth_tokens(None, first.accurate) is None
