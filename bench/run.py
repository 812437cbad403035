"""`make bench`: the real daemon against the simulator over loopback, one table.

    1  cold full sync   empty state, empty Forstok; limits and latencies scaled
    2  warm full sync   the same again after 1% of the pairs changed
    3  incremental      real limits, real time: one document a second
    4  footprint        a cold full sync of 50,000 items x 3 warehouses, limits off

The simulator runs on its own thread in this process; the daemon is a child
process (`python -m daemon full-sync` or `run`), measured from outside. Run
from the repository root: `.venv/bin/python bench/run.py [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from daemon_process import (
    WAREHOUSES,
    Limits,
    Outcome,
    environment,
    run,
    start_up_cpu_s,
    state_scalar,
    state_size_mb,
    write_config,
)
from latency import Delays, DeliveryTracker, offered

from daemon.simulator.accurate import LineSpec
from daemon.simulator.app import Simulator
from daemon.simulator.business import Business
from daemon.simulator.config import ItemSpec, SimConfig
from daemon.simulator.documents import KINDS

ACCURATE_LATENCY_S = 0.080
FORSTOK_LATENCY_S = 0.150
ACCURATE_RATE = 8.0  # per second
FORSTOK_RATE = 50 / 60  # per second
CPU_SHARE_TARGET = 0.10
RSS_TARGET_MB = 120.0


@dataclass
class Table:
    """Rows of (scenario, measure, value, target, verdict)."""

    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    scenario: str = ""

    def start(self, title: str) -> None:
        self.scenario = title

    def add(
        self, measure: str, value: str, target: str = "", met: bool | None = None
    ) -> int:
        """Append a row; returns its index, for a value filled in later."""
        verdict = "" if met is None else ("met" if met else "**missed**")
        self.rows.append((self.scenario, measure, value, target, verdict))
        self.scenario = ""
        return len(self.rows) - 1

    def fill(self, index: int, value: str) -> None:
        scenario, measure, _, target, verdict = self.rows[index]
        self.rows[index] = (scenario, measure, value, target, verdict)

    def render(self) -> str:
        head = ("scenario (parameters)", "measure", "value", "target", "")
        lines = [_row(head), _row(("---",) * 5)]
        lines += [_row(r) for r in self.rows]
        return "\n".join(lines)


def _row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"


def catalogue(items: int, seed: int) -> SimConfig:
    """`items` inventory items with stock in all three warehouses."""
    rng = random.Random(seed)
    config = SimConfig(seed=seed)
    config.catalogue.warehouses = tuple(WAREHOUSES)
    config.catalogue.forstok_warehouses = {f"WH-{n}": n for n in WAREHOUSES.values()}
    config.catalogue.items = [
        ItemSpec(
            f"SKU-{n:05d}",
            opening={name: Decimal(rng.randint(1, 40)) for name in WAREHOUSES},
        )
        for n in range(1, items + 1)
    ]
    return config


def established(sim: Simulator) -> Simulator:
    """Spread the items' lastUpdate over the three days before yesterday: a
    shop's catalogue is not created in one second, and the item poll lists
    every item stamped within its lookback of the newest one on every poll."""
    items = list(sim.accurate.items.values())
    first = sim.accurate.now_stamp() - timedelta(days=3)
    step = timedelta(days=2) / max(1, len(items))
    for n, item in enumerate(items):
        item.last_update = (first + n * step).replace(microsecond=0)
    return sim


def scale(sim: Simulator, factor: int, latency: bool = True) -> None:
    """Limits times `factor`, latencies divided by it; 0 lifts the limits."""
    accurate, forstok = sim.config.accurate, sim.config.forstok
    accurate.rate_per_second = 8 * factor
    forstok.requests_per_minute = 50 * factor
    accurate.max_in_flight = 8 if factor else 0
    forstok.max_in_flight = 1 if factor else 0
    accurate.latency_s = ACCURATE_LATENCY_S / factor if factor and latency else 0.0
    forstok.latency_s = FORSTOK_LATENCY_S / factor if factor and latency else 0.0


def expected(sim: Simulator) -> dict[tuple[str, int], int]:
    return {
        (item, WAREHOUSES[warehouse]): offered(quantity)
        for (item, warehouse), quantity in sim.accurate.stock_snapshot().items()
        if warehouse in WAREHOUSES
    }


def converged(sim: Simulator) -> bool:
    held: dict[tuple[str, int], int] = sim.forstok.on_hand_snapshot()
    return expected(sim) == held


@dataclass
class Traffic:
    accurate: int
    forstok: int
    refused: int
    by_endpoint: Counter[str]

    @classmethod
    def of(cls, sim: Simulator, since: float = 0.0) -> Traffic:
        entries = [e for e in sim.requests.entries() if e.arrived >= since]
        return cls(
            accurate=sum(1 for e in entries if e.service == "accurate"),
            forstok=sum(1 for e in entries if e.service == "forstok"),
            refused=sum(1 for e in entries if e.limited or e.status == 429),
            by_endpoint=Counter(e.endpoint for e in entries),
        )

    def floor_s(self, factor: int) -> float:
        return max(
            self.accurate / (ACCURATE_RATE * factor),
            self.forstok / (FORSTOK_RATE * factor),
        )

    def count(self, suffix: str) -> int:
        return sum(n for path, n in self.by_endpoint.items() if path.endswith(suffix))


@dataclass
class Bench:
    args: argparse.Namespace
    folder: Path
    table: Table = field(default_factory=Table)
    start_up_cpu: float = 0.0
    push_cpu_row: int = -1
    cold_cpu_s: float = 0.0
    cold_counts: dict[str, int] = field(default_factory=dict)

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"


# -- scenarios 1 and 2 ----------------------------------------------------------


def full_sync(
    bench: Bench, sim: Simulator, config: Path, name: str
) -> tuple[Outcome, dict[str, int], Traffic]:
    sim.requests.reset()
    outcome = run(["full-sync", "--json"], config, environment(sim), bench.log(name))
    if outcome.exit_code != 0:
        raise SystemExit(
            f"bench: {name} full sync exited {outcome.exit_code}; see {bench.log(name)}"
        )
    counts = json.loads(outcome.stdout.strip().splitlines()[-1])
    return outcome, counts, Traffic.of(sim)


def scenario_cold(bench: Bench, sim: Simulator, config: Path, limits: Limits) -> None:
    items = len(sim.accurate.items)
    bench.table.start(
        f"1 cold full sync ({items:,} items x 3 warehouses = {3 * items:,} pairs; "
        f"factor {limits.factor}: Accurate {limits.accurate_per_s}/s, "
        f"{ACCURATE_LATENCY_S * 1000 / limits.factor:.1f} ms; Forstok "
        f"{limits.forstok_per_min}/min, "
        f"{FORSTOK_LATENCY_S * 1000 / limits.factor:.1f} ms; "
        f"page {limits.page_size}, batch {limits.batch_size})"
    )
    outcome, counts, traffic = full_sync(bench, sim, config, "1-cold")
    _sync_rows(bench, outcome, traffic, limits, cold=True)
    bench.table.add(
        "Forstok equals Accurate afterwards",
        str(converged(sim)),
        "True",
        converged(sim),
    )
    pushed = counts["pushed"]
    work = outcome.cpu_s - bench.start_up_cpu
    bench.table.add("pairs read / pushed", f"{counts['pairs_read']:,} / {pushed:,}")
    bench.cold_cpu_s, bench.cold_counts = work, counts
    bench.push_cpu_row = bench.table.add(
        "CPU s per 1,000 pairs pushed (cold CPU minus start-up minus reading "
        "at the warm run's cost)",
        "(after scenario 2)",
    )
    share = work / (outcome.wall_s * limits.factor)
    bench.table.add(
        "CPU share of wall time at the real limits (CPU / (wall x factor))",
        f"{share:.1%} (measured at x{limits.factor}: "
        f"{outcome.cpu_s / outcome.wall_s:.0%})",
        f"< {CPU_SHARE_TARGET:.0%}",
        share < CPU_SHARE_TARGET,
    )


def _sync_rows(
    bench: Bench, outcome: Outcome, traffic: Traffic, limits: Limits, cold: bool
) -> None:
    floor = traffic.floor_s(limits.factor)
    ratio = outcome.wall_s / floor
    table = bench.table
    table.add("wall time (process start to exit)", f"{outcome.wall_s:.1f} s")
    table.add("Accurate requests (auth included)", f"{traffic.accurate:,}")
    table.add("Forstok requests (auth included)", f"{traffic.forstok:,}")
    table.add(
        "wall / rate-limit floor",
        f"{ratio:.2f} (floor {floor:.1f} s)",
        "<= 1.15" if cold else "",
        ratio <= 1.15 if cold else None,
    )
    table.add("429s", str(traffic.refused), "0", traffic.refused == 0)
    table.add(
        "CPU s / peak RSS", f"{outcome.cpu_s:.1f} s / {outcome.peak_rss_mb:.0f} MB"
    )


def change_one_percent(sim: Simulator, seed: int) -> int:
    """Raise 1% of the pairs by 1-5 units in one item adjustment; returns how many."""
    rng = random.Random(seed)
    model = sim.accurate
    pairs = [(item.no, name) for item in model.items.values() for name in WAREHOUSES]
    chosen = rng.sample(pairs, max(1, len(pairs) // 100))
    lines = [
        LineSpec(no, rng.randint(1, 5), name, line_type="ADJUSTMENT_IN")
        for no, name in chosen
    ]
    model.create_document("item-adjustment", lines)
    return len(chosen)


def scenario_warm(bench: Bench, sim: Simulator, config: Path, limits: Limits) -> None:
    changed = change_one_percent(sim, seed=2)
    items = len(sim.accurate.items)
    bench.table.start(
        f"2 warm full sync (the same state and catalogue; {changed:,} pairs "
        f"changed by one item adjustment; factor {limits.factor})"
    )
    history_start = len(sim.forstok.history_of())
    outcome, counts, traffic = full_sync(bench, sim, config, "2-warm")
    _sync_rows(bench, outcome, traffic, limits, cold=False)

    pushes = sim.forstok.history_of()[history_start:]
    carried = sum(1 for p in pushes if p.old != p.new)
    quantity_requests = traffic.count("quantities.json")
    bench.table.add(
        "Forstok rows that carried a changed value",
        f"{carried:,} of {len(pushes):,} ({carried / max(len(pushes), 1):.0%}); "
        f"{quantity_requests} quantity requests for {changed:,} changes "
        f"(full batches: {math.ceil(changed / limits.batch_size)})",
        "100%",
        carried == len(pushes) == changed,
    )
    stock_pages = 3 * math.ceil(items / limits.page_size)
    item_pages = math.ceil(items / limits.page_size)
    reads = traffic.count("list-stock.do")
    item_reads = traffic.count("item/list.do")
    other = traffic.accurate - reads - item_reads
    bench.table.add(
        "Accurate: stock list pages / item list pages / other",
        f"{reads} / {item_reads} / {other} "
        f"(pages needed: {stock_pages} / {item_pages})",
        "no more than needed",
        reads <= stock_pages and item_reads <= item_pages,
    )
    bench.table.add(
        "Forstok equals Accurate afterwards",
        str(converged(sim)),
        "True",
        converged(sim),
    )
    read_cost = (outcome.cpu_s - bench.start_up_cpu) / counts["pairs_read"]
    bench.table.add(
        "CPU s per 1,000 pairs read (warm run, start-up subtracted)",
        f"{read_cost * 1000:.3f}",
    )
    if bench.push_cpu_row >= 0:
        cold = bench.cold_counts
        push_cpu = bench.cold_cpu_s - read_cost * cold["pairs_read"]
        bench.table.fill(
            bench.push_cpu_row, f"{push_cpu / max(cold['pushed'], 1) * 1000:.3f}"
        )


# -- scenario 3 -----------------------------------------------------------------


@dataclass
class Incremental:
    idle_s: float
    business_s: float
    drain_s: float
    idle_requests: Counter[str] = field(default_factory=Counter)
    busy_accurate: int = 0
    warm_up: Counter[str] = field(default_factory=Counter)
    """Accurate requests of the first polls, which refresh a large document."""
    counted_items: int = 0
    forstok_clear_at: float = 0.0
    """When the scaled runs' requests have left Forstok's 60 s window."""


def scenario_incremental(bench: Bench, sim: Simulator, folder: Path) -> None:
    poll = 5.0
    limits = Limits(factor=1, poll_interval_s=poll)
    scale(sim, 1)
    config = write_config(sim, folder, limits)
    plan = Incremental(
        idle_s=20.0 if bench.args.quick else 30.0,
        business_s=bench.args.business_s,
        drain_s=10.0 if bench.args.quick else 15.0,
    )
    earlier = sim.requests.entries("forstok")
    if earlier:
        plan.forstok_clear_at = earlier[-1].arrived + 61.0
    plan.counted_items = stock_count(sim, bench.args.opname_items)
    tracker = DeliveryTracker(sim, WAREHOUSES)
    sim.accurate.commit_listeners.append(tracker.on_commit)
    sim.requests.reset()
    state = folder / "state.sqlite3"
    outcome = run(
        ["run"],
        config,
        environment(sim),
        bench.log("3-incremental"),
        until=lambda process: _incremental_session(sim, state, plan, tracker, process),
    )
    sim.accurate.commit_listeners.remove(tracker.on_commit)
    _incremental_rows(bench, outcome, plan, tracker.delays(), tracker.documents, poll)


def _incremental_session(
    sim: Simulator,
    state: Path,
    plan: Incremental,
    tracker: DeliveryTracker,
    process: object,
) -> None:
    _wait_until_idle(sim, state, timeout_s=180)
    plan.warm_up = Counter(e.endpoint for e in sim.requests.entries("accurate"))
    since = time.monotonic()
    time.sleep(plan.idle_s)
    idle = [e for e in sim.requests.entries("accurate") if e.arrived >= since]
    plan.idle_requests = Counter(e.endpoint for e in idle)
    time.sleep(max(0.0, plan.forstok_clear_at - time.monotonic()))

    business = Business(sim.accurate, sim.forstok, seed=3)
    kinds = list(KINDS)
    rng = random.Random(3)
    since = time.monotonic()
    next_at = since
    while time.monotonic() - since < plan.business_s:
        business.create(rng.choice(kinds))
        next_at += 1.0
        time.sleep(max(0.0, next_at - time.monotonic()))
    plan.busy_accurate = sum(
        1 for e in sim.requests.entries("accurate") if e.arrived >= since
    )
    time.sleep(plan.drain_s)


def stock_count(sim: Simulator, items: int) -> int:
    """A stock count of `items` items in GDG-1 that finds what the books say:
    many pairs to re-read, none to change. Returns how many items it counts."""
    model = sim.accurate
    counted = list(model.items.values())[:items]
    lines = [
        LineSpec(item.no, model.stock_of(item.no, "GDG-1"), "GDG-1") for item in counted
    ]
    model.create_document("stock-opname-result", lines)
    return len(counted)


def _wait_until_idle(sim: Simulator, state: Path, timeout_s: float) -> None:
    """Until two polls have finished and both queues are empty."""
    deadline = time.monotonic() + timeout_s
    polls = "SELECT count(*) FROM run WHERE type = 'poll' AND finished_at IS NOT NULL"
    queued = (
        "SELECT (SELECT count(*) FROM pending_pair) + (SELECT count(*) FROM push_queue)"
    )
    while time.monotonic() < deadline:
        if state_scalar(state, polls) >= 2 and state_scalar(state, queued) == 0:
            return
        time.sleep(0.5)
    raise SystemExit("bench: the daemon did not settle before the incremental run")


def _incremental_rows(
    bench: Bench,
    outcome: Outcome,
    plan: Incremental,
    delays: Delays,
    documents: int,
    poll: float,
) -> None:
    table = bench.table
    table.start(
        f"3 incremental (real limits: Accurate 8/s, 80 ms; Forstok 50/min, 150 ms; "
        f"poll_interval {poll:g} s; {plan.idle_s:g} s idle, then one document a "
        f"second of random kinds for {plan.business_s:g} s, "
        f"{plan.drain_s:g} s to drain)"
    )
    target = poll + 2
    table.add(
        "commit -> Forstok: p50 / p95 / max",
        f"{delays.p50_s:.2f} / {delays.p95_s:.2f} / {delays.max_s:.2f} s",
        f"p95 <= {target:g} s",
        delays.p95_s <= target,
    )
    missed = (
        "; not delivered: " + ", ".join(delays.undelivered)
        if delays.undelivered
        else ""
    )
    table.add(
        "offered-quantity changes delivered",
        f"{delays.delivered} of {delays.changes} (from {documents} documents){missed}",
        "all but kinds 14/16/17 back-dated past 7 days (left to the full sync)",
        delays.unexplained == 0,
    )
    idle_total = sum(plan.idle_requests.values())
    per_poll = idle_total / (plan.idle_s / poll)
    at_default = per_poll / 30.0
    table.add(
        f"idle Accurate use at {poll:g} s polls",
        f"{idle_total / plan.idle_s:.2f} req/s ({per_poll:.1f} per poll)",
    )
    table.add(
        "idle Accurate use at the default 30 s poll (same requests per poll)",
        f"{at_default:.2f} req/s = {at_default / ACCURATE_RATE:.1%} of 8/s",
        "< 10%",
        at_default / ACCURATE_RATE < 0.10,
    )
    kinds = sorted(
        (path.removeprefix("/accurate/api/"), n / (plan.idle_s / poll))
        for path, n in plan.idle_requests.items()
    )
    table.add(
        "idle requests per poll, by endpoint",
        "; ".join(f"{p} {n:.1f}" for p, n in kinds),
    )
    table.add(
        "Accurate use while busy",
        f"{plan.busy_accurate / plan.business_s:.2f} req/s",
    )
    _refresh_row(bench, plan)
    table.add(
        "CPU s / peak RSS", f"{outcome.cpu_s:.1f} s / {outcome.peak_rss_mb:.0f} MB"
    )


def _refresh_row(bench: Bench, plan: Incremental) -> None:
    """How the first polls re-read the pairs of the stock count (and of the
    1% adjustment, still inside the lookback): detail calls or stock lists."""
    pages = plan.warm_up["/accurate/api/item/list-stock.do"]
    details = plan.warm_up["/accurate/api/item/detail.do"]
    bench.table.add(
        f"refresh after a stock count of {plan.counted_items} items in one "
        "warehouse (plus the 1% adjustment): stock-list pages / item details",
        f"{pages} / {details}",
        "lists when they take fewer requests",
        pages > 0 and pages + details < plan.counted_items,
    )


# -- scenario 4 -----------------------------------------------------------------


def scenario_footprint(bench: Bench) -> None:
    items = bench.args.footprint_items
    sim = established(Simulator(catalogue(items, seed=4)))
    scale(sim, 0)
    folder = bench.folder / "footprint"
    folder.mkdir()
    sim.start_in_thread()
    try:
        limits = Limits(factor=1000, page_size=1000)
        config = write_config(sim, folder, limits)
        bench.table.start(
            f"4 footprint ({items:,} items x 3 warehouses, cold full sync, "
            f"limits and latency off, page {limits.page_size}, "
            f"batch {limits.batch_size})"
        )
        outcome, counts, traffic = full_sync(bench, sim, config, "4-footprint")
        state = folder / "state.sqlite3"
        pairs = state_scalar(state, "SELECT count(*) FROM reading")
        bench.table.add("pairs in state", f"{pairs:,}")
        bench.table.add(
            "peak RSS",
            f"{outcome.peak_rss_mb:.0f} MB",
            f"< {RSS_TARGET_MB:.0f} MB",
            outcome.peak_rss_mb < RSS_TARGET_MB,
        )
        work = outcome.cpu_s - bench.start_up_cpu
        bench.table.add(
            "wall / CPU",
            f"{outcome.wall_s:.1f} s / {outcome.cpu_s:.1f} s "
            f"({work / max(counts['pairs_read'], 1) * 1000:.3f} s per 1,000 pairs "
            "read and pushed)",
        )
        bench.table.add("SQLite file (with WAL)", f"{state_size_mb(state):.1f} MB")
        bench.table.add(
            "Forstok equals Accurate afterwards",
            str(converged(sim)),
            "True",
            converged(sim),
        )
        bench.table.add(
            "requests: Accurate / Forstok",
            f"{traffic.accurate:,} / {traffic.forstok:,}",
        )
    finally:
        sim.stop()


# -- main -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.business_s = 30.0
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="stocksync-bench-") as name:
        bench = Bench(args, Path(name))
        bench.start_up_cpu = start_up_cpu_s()
        _say(f"start-up CPU of a daemon process: {bench.start_up_cpu:.2f} s")
        if not args.footprint_only:
            _sync_scenarios(bench)
        if not args.skip_footprint:
            _run_steps([("footprint", lambda: scenario_footprint(bench))], bench)
        if args.keep:
            _say(f"logs in {bench.folder} (kept)")
            input("press Enter to delete them ")
    print()
    print(bench.table.render())
    print()
    print(
        f"Machine: {os.cpu_count()} CPUs ({_cpu_model()}), Python "
        f"{sys.version.split()[0]}; load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end."
    )
    _say(f"whole run: {time.monotonic() - started:.0f} s")
    return 0


def _sync_scenarios(bench: Bench) -> None:
    """Scenarios 1-3 share one simulator, catalogue and state file."""
    args = bench.args
    sim = established(Simulator(catalogue(args.items, seed=1)))
    sim.start_in_thread()
    try:
        limits = Limits(factor=args.factor)
        scale(sim, args.factor)
        config = write_config(sim, bench.folder, limits)
        steps = [
            ("cold full sync", lambda: scenario_cold(bench, sim, config, limits)),
            ("warm full sync", lambda: scenario_warm(bench, sim, config, limits)),
            ("incremental", lambda: scenario_incremental(bench, sim, bench.folder)),
        ]
        _run_steps(steps, bench)
    finally:
        sim.stop()


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    names = [
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.startswith("model name")
    ]
    return names[0] if names else "unknown CPU"


def _run_steps(steps: list[tuple[str, Callable[[], None]]], bench: Bench) -> None:
    for title, step in steps:
        _say(f"{title} ...")
        began = time.monotonic()
        step()
        _say(f"{title} done in {time.monotonic() - began:.0f} s")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000, help="catalogue of 1-3")
    parser.add_argument("--factor", type=int, default=15, help="scale of 1-2")
    parser.add_argument(
        "--business-s",
        type=float,
        default=135.0,
        help="busy time of scenario 3 (with 30 s idle and 15 s to drain: 3 minutes)",
    )
    parser.add_argument("--footprint-items", type=int, default=50_000)
    parser.add_argument(
        "--opname-items", type=int, default=400, help="stock count before 3"
    )
    parser.add_argument("--skip-footprint", action="store_true")
    parser.add_argument("--footprint-only", action="store_true")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="scenario 3 in one minute: 20 s idle, 30 s busy, 10 s to drain",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    return parser


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
