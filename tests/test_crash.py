"""SIGKILL at any instant, then a restart, ends in the converged state (C20).

The daemon runs as systemd runs it, in its own process, against the simulator
served from the test. It is killed at points the test picks (the simulator
holds the Nth request of a kind until the kill) and at random moments, while
a merchant keeps working; between runs its cursors are read from the SQLite
file and must never move backward. After the last restart and quiescence,
Forstok equals Accurate for every mapped pair.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anyio
import pytest
import yaml
from daemon_support import DaemonProcess, Daemons, daemon_config
from harness import fast_sim_config, mismatches
from sync_cases import case_config, cursors_in, engine_for, on_hand, sell

from daemon.simulator.app import Simulator
from daemon.simulator.config import SimConfig
from daemon.simulator.observe import Trigger
from daemon.timefmt import parse_last_update

KILLS = 20
SLOW_KILLS = 300


def crash_config(
    sim: Simulator, tmp_path: Path, batch_size: int = 20, page_size: int = 20
) -> Path:
    """A daemon config for kill tests: quiet logs, short timeouts."""
    path = daemon_config(sim, tmp_path, timeouts=2.0)
    raw = yaml.safe_load(path.read_text())
    raw["log"]["level"] = "info"
    raw["accurate"]["page_size"] = page_size
    raw["forstok"]["batch_size"] = batch_size
    path.write_text(yaml.safe_dump(raw))
    return path


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    daemon: DaemonProcess,
    state: Callable[[], str] = lambda: "",
) -> None:
    """Wait for `condition` while the daemon runs; on timeout, say `state()`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert daemon.running, f"daemon exited\n{daemon.tail()}"
        assert time.monotonic() < deadline, f"gave up after {timeout} s {state()}"
        time.sleep(0.05)


class CursorWatch:
    """Cursors read from the state file between runs; none may go backward."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.seen: dict[str, datetime] = {}

    def check(self) -> None:
        for kind, value in cursors_in(self.state).items():
            moment = parse_last_update(value)
            before = self.seen.get(kind)
            assert before is None or moment >= before, f"{kind} went back"
            self.seen[kind] = moment


def kill(daemon: DaemonProcess) -> None:
    """SIGKILL; the daemon must have been running until then."""
    assert daemon.running, f"daemon exited by itself\n{daemon.tail()}"
    daemon.send(signal.SIGKILL)
    assert daemon.wait() == -signal.SIGKILL


# -- C20: named kill points ------------------------------------------------------


@pytest.fixture
def sim_config() -> SimConfig:
    return case_config({"X": 10, "Y": 10, "D": 10})


@dataclass(frozen=True)
class KillPoint:
    name: str
    service: str
    endpoint: str
    nth: int


KILL_POINTS = [
    KillPoint("after listing", "accurate", "*/sales-invoice/detail.do", 1),
    KillPoint("after the cursor commit", "accurate", "*/item/detail.do", 1),
    KillPoint("after X's push", "forstok", "*/quantities.json", 2),
    KillPoint("after Y's push", "forstok", "", 0),
]


def prepared_state(sim: Simulator, tmp_path: Path) -> None:
    """A previous run: a completed full sync, and cursors started."""

    async def body() -> None:
        async with engine_for(sim, tmp_path) as h:
            await h.engine.full_sync("earlier run")
            await h.engine.poll()

    anyio.run(body)


def kill_at(point: KillPoint, sim: Simulator, daemons: Daemons, config: Path) -> None:
    """Start the daemon and SIGKILL it at the point."""
    if point.nth == 0:  # both pushes applied: kill before or after the record
        pushes = len(sim.forstok.history_of())
        daemon = daemons.start(config)
        wait_until(lambda: len(sim.forstok.history_of()) >= pushes + 2, 20, daemon)
        kill(daemon)
        return
    trigger = sim.when_request(point.service, point.endpoint, nth=point.nth)
    daemon = daemons.start(config)
    try:
        assert trigger.wait(20), daemon.tail()
        kill(daemon)
    finally:
        trigger.release()


@pytest.mark.parametrize("point", KILL_POINTS, ids=lambda p: p.name)
def test_c20_kill_at_each_point_then_restart_converges(
    sim: Simulator, tmp_path: Path, daemons: Daemons, point: KillPoint
) -> None:
    """SI-30 and SI-31 take 1 X and 2 Y; the daemon is killed at one point of
    handling them and restarted; Forstok ends with X = 9, Y = 8 and the cursor
    never went back, without a full sync after the restart."""
    config = crash_config(sim, tmp_path, batch_size=1)
    prepared_state(sim, tmp_path)
    cursors = CursorWatch(tmp_path / "state.sqlite3")
    cursors.check()
    sell(sim, "SI-30", "X", 1, "01/02/2026 12:00:00")
    sell(sim, "SI-31", "Y", 2, "01/02/2026 12:00:05")

    kill_at(point, sim, daemons, config)
    cursors.check()

    restarted = daemons.start(config)
    restarted.wait_for("daemon_started", timeout=20)
    wait_until(lambda: (on_hand(sim, "X"), on_hand(sim, "Y")) == (9, 8), 20, restarted)
    assert restarted.stop() == 0
    cursors.check()
    assert mismatches(sim) == {}
    assert not restarted.find("full_sync_started")


def test_c05_killed_after_page_one_of_an_unsorted_list_restart_converges(
    sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """The list comes newest first, three to a page; the daemon is killed once
    page 1 is in, so no cursor was saved for the window, and after the restart
    the older pages are processed too: D ends at 4, without a full sync."""
    sim.config.accurate.order = "newest_first"
    sim.config.accurate.honour_sort = False
    config = crash_config(sim, tmp_path, page_size=3)
    prepared_state(sim, tmp_path)
    sell(sim, "SI-10", "X", 1, "01/02/2026 09:59:00")
    stamps = ["10:00:00", "10:30:00", "10:59:00", "11:00:00", "11:30:00", "12:00:00"]
    for n, stamp in enumerate(stamps, start=11):
        sell(sim, f"SI-{n}", "D", 1, f"01/02/2026 {stamp}")
    cursors = CursorWatch(tmp_path / "state.sqlite3")
    cursors.check()

    kill_at(
        KillPoint("after page 1", "accurate", "*/sales-invoice/list.do", 2),
        sim,
        daemons,
        config,
    )
    cursors.check()

    restarted = daemons.start(config)
    restarted.wait_for("daemon_started", timeout=20)
    wait_until(lambda: on_hand(sim, "D") == 4, 20, restarted)
    assert restarted.stop() == 0
    cursors.check()
    assert mismatches(sim) == {}
    assert not restarted.find("full_sync_started")


# -- chaos: random kills under business activity -----------------------------------


class Merchant(threading.Thread):
    """The simulator's merchant, doing business until stopped."""

    def __init__(self, sim: Simulator, pause_s: float) -> None:
        super().__init__(name="merchant", daemon=True)
        self.sim = sim
        self.pause_s = pause_s
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.pause_s):
            self.sim.business.step()

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


@pytest.fixture
def busy_sim() -> Iterator[Simulator]:
    config = fast_sim_config(items=12)
    config.forstok.requests_per_minute = 60_000
    config.forstok.max_in_flight = 8
    simulator = Simulator(config)
    simulator.start_in_thread()
    try:
        yield simulator
    finally:
        simulator.stop()


CHOSEN_POINTS = [
    ("accurate", "*/list.do", 30),
    ("accurate", "*/detail.do", 20),
    ("accurate", "*/item/detail.do", 6),
    ("accurate", "*/item/list-stock.do", 4),
    ("forstok", "*/quantities.json", 3),
]


def one_life(
    sim: Simulator, daemons: Daemons, config: Path, rng: random.Random
) -> None:
    """Start the daemon, let it work up to a chosen request or for a random
    moment, and SIGKILL it there."""
    trigger: Trigger | None = None
    if rng.random() < 0.5:
        service, endpoint, most = rng.choice(CHOSEN_POINTS)
        trigger = sim.when_request(service, endpoint, nth=rng.randint(1, most))
    daemon = daemons.start(config)
    try:
        if trigger is None or not trigger.wait(1.5):
            daemon.wait_for("daemon_started", timeout=20)
            time.sleep(rng.uniform(0.0, 0.6))
        kill(daemon)
    finally:
        if trigger is not None:
            trigger.release()


def converge_after_chaos(sim: Simulator, daemons: Daemons, config: Path) -> None:
    """The last restart, once business has stopped: a full sync and a poll,
    then Forstok equals Accurate everywhere."""
    daemon = daemons.start(config)
    daemon.wait_for("daemon_started", timeout=20)
    daemon.send(signal.SIGHUP)
    daemon.wait_for("full_sync_finished", timeout=40)
    wait_until(lambda: not mismatches(sim), 20, daemon, lambda: str(mismatches(sim)))
    assert daemon.stop() == 0


def run_chaos(
    sim: Simulator,
    tmp_path: Path,
    daemons: Daemons,
    kills: int,
    seed: int,
    pause_s: float = 0.1,
) -> None:
    """`kills` lives, each SIGKILLed, while the merchant acts every `pause_s`;
    then a last restart that must converge."""
    rng = random.Random(seed)
    config = crash_config(sim, tmp_path)
    cursors = CursorWatch(tmp_path / "state.sqlite3")
    merchant = Merchant(sim, pause_s)
    merchant.start()
    try:
        for _ in range(kills):
            one_life(sim, daemons, config, rng)
            cursors.check()
    finally:
        merchant.stop()
    converge_after_chaos(sim, daemons, config)
    cursors.check()


@pytest.mark.timeout(120)
def test_random_kills_under_business_activity_converge(
    busy_sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """The daemon is SIGKILLed twenty times, at chosen requests and at random
    moments, while the merchant works; no cursor ever goes back, and after the
    last restart Forstok equals Accurate."""
    run_chaos(busy_sim, tmp_path, daemons, KILLS, seed=20)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_hundreds_of_random_kills_converge(
    busy_sim: Simulator, tmp_path: Path, daemons: Daemons
) -> None:
    """The same, three hundred times (STOCKSYNC_SLOW=1), with the merchant at
    a pace that keeps the lookback window a few pages long."""
    run_chaos(busy_sim, tmp_path, daemons, SLOW_KILLS, seed=300, pause_s=0.5)
