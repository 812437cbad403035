"""Soak: ten simulated minutes of shop activity under a random fault plan.

The daemon runs as its own process. Time is compressed rather than faked:
the simulated shop's clock runs forty times faster than real time, so 15 s
of the test are 10 minutes of documents, while the daemon's own intervals
(poll, deadlines, Retry-After, credential retry) are cut to fractions of a
second. A seeded random plan throws every temporary fault of issue 4 at
both services for the first 11 s. Once the faults and the shop have
stopped and a full sync has run, Forstok must equal Accurate.

STOCKSYNC_SOAK_SEED picks another plan; a failure prints the seed it used.
"""

from __future__ import annotations

import os
import random
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from daemon_support import DaemonProcess, Daemons
from harness import fast_sim_config, mismatches
from network_support import network_config

from daemon.simulator import (
    FastClock,
    FaultAction,
    FaultPlan,
    FaultRule,
    SimConfig,
    Simulator,
)

pytestmark = pytest.mark.timeout(90)

SPEED = 40.0
ACTIVE_S = 15.0  # 10 simulated minutes
FAULTS_UNTIL_S = 11.0
RULES = 16
SEED = int(os.environ.get("STOCKSYNC_SOAK_SEED", "4"))

ACCURATE_ENDPOINTS = ("*", "*/list.do", "*/detail.do", "*/item/*", "/api/*")
FORSTOK_ENDPOINTS = ("*", "*/quantities.json")


def accurate_action(rng: random.Random) -> FaultAction:
    form = rng.choice(["seconds", "http-date"])
    return rng.choice(
        [
            FaultAction("status", status=429, retry_after=1, retry_after_form=form),  # type: ignore[arg-type]
            FaultAction("status", status=rng.choice([500, 502, 503, 504])),
            FaultAction("reset"),
            FaultAction("hang"),
            FaultAction("delay", seconds=0.3),
            FaultAction("truncate"),
            FaultAction("non_json"),
            FaultAction("accurate_error"),
            FaultAction("accurate_error", text="Barang & Jasa tidak tepat"),
            FaultAction("redirect_other_host"),
            FaultAction("timestamp_skew"),
            FaultAction("revoked_token"),
        ]
    )


def forstok_action(rng: random.Random) -> FaultAction:
    return rng.choice(
        [
            FaultAction("status", status=429, retry_after=1),
            FaultAction("status", status=rng.choice([500, 502, 503, 504])),
            FaultAction("reset"),
            FaultAction("hang"),
            FaultAction("delay", seconds=0.3),
            FaultAction("truncate"),
            FaultAction("non_json"),
            FaultAction("forstok_token_expired"),
        ]
    )


def random_plan(rng: random.Random) -> FaultPlan:
    """Half the rules for each service, in random windows before
    FAULTS_UNTIL_S, each hitting every request, every 2nd or 3rd, or a few.
    Forstok's windows are longer: it is only called when stock changed."""
    rules = []
    for n in range(RULES):
        longest = 2.5 if n % 2 else 4.0
        start = rng.uniform(0.0, FAULTS_UNTIL_S - longest)
        if n % 2:
            service, endpoint = "accurate", rng.choice(ACCURATE_ENDPOINTS)
            action = accurate_action(rng)
        else:
            service, endpoint = "forstok", rng.choice(FORSTOK_ENDPOINTS)
            action = forstok_action(rng)
        rule = FaultRule(
            action,
            service,
            endpoint,
            count=rng.choice([None, 1, 3]),
            every=rng.choice([None, 2, 3]),
            from_s=start,
            until_s=start + rng.uniform(0.5, longest),
        )
        rules.append(rule)
    return FaultPlan(rules)


@pytest.fixture
def sim_config() -> SimConfig:
    """Twelve items, a shop clock forty times real time ending about now,
    and no limits at the simulator beyond the daemon's own."""
    config = fast_sim_config(items=12)
    start = datetime.now(UTC) - timedelta(seconds=ACTIVE_S * SPEED)
    config.clock = FastClock(start, SPEED)
    config.seed = SEED
    config.forstok.requests_per_minute = 0
    return config


def start_daemon(sim: Simulator, tmp_path: Path, daemons: Daemons) -> DaemonProcess:
    config = network_config(
        sim,
        tmp_path,
        accurate={"timeout": "1s", "max_retries": 2, "retry_after_max": "2s"},
        forstok={"timeout": "1s", "max_retries": 2, "retry_after_max": "2s"},
        sync={"poll_interval": "0.3s", "lookback": "5m"},
    )
    return daemons.start(config)


def test_ten_simulated_minutes_under_random_faults_converge(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """Whatever the plan throws, the daemon never exits, and after the
    faults and the shop stop, a full sync leaves Forstok equal to Accurate."""
    daemon = start_daemon(sim, tmp_path, daemons)
    daemon.wait_for("full_sync_finished")
    sim_start = sim.config.clock.now()

    plan = random_plan(random.Random(SEED))
    sim.install_faults(plan)
    sim.config.business_steps_per_minute = 180.0
    deadline = time.monotonic() + ACTIVE_S
    while time.monotonic() < deadline:
        assert daemon.running, f"seed {SEED}\n{daemon.tail()}"
        time.sleep(0.2)
    sim.config.business_steps_per_minute = 0.0
    simulated = sim.config.clock.now() - sim_start

    syncs = len(daemon.find("full_sync_finished"))
    daemon.send(signal.SIGHUP)
    daemon.wait_for("full_sync_finished", count=syncs + 1, timeout=30)
    wait_converged(sim, daemon)

    fired = [rule for rule in plan.rules if rule.applied]
    print(f"seed {SEED}: {len(fired)} of {RULES} rules fired:")
    for rule in fired:
        print(f"  {rule.service} {rule.endpoint} {rule.action.kind} x{rule.applied}")
    assert simulated >= timedelta(minutes=10)
    assert len(fired) >= RULES // 4, f"seed {SEED}: the plan hardly fired"
    assert {rule.service for rule in fired} == {"accurate", "forstok"}
    assert daemon.find("daemon_crashed") == []
    assert daemon.bad_stdout_lines() == []
    assert daemon.stop() == 0


def wait_converged(sim: Simulator, daemon: DaemonProcess) -> None:
    """Polls after the full sync may still be settling the last pushes."""
    deadline = time.monotonic() + 15
    while mismatches(sim):
        assert daemon.running, daemon.tail()
        assert time.monotonic() < deadline, (
            f"seed {SEED}: {mismatches(sim)}\n{daemon.tail()}"
        )
        time.sleep(0.1)
