"""The `stocksync` command line.

Exit statuses follow sysexits: 78 for a bad configuration, 75 when another
process holds the state file, so that systemd does not restart-loop on them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable, Coroutine
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import anyio
import structlog

from daemon.config import Settings, load_settings, world_readable_secret_file
from daemon.errors import ConfigError, InstanceLocked, ServiceError
from daemon.logs import configure_logging
from daemon.mapping import Override

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_CONFIG = 78

log = structlog.get_logger("daemon.cli")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        # The simulator parses its own options; argparse would refuse them.
        from daemon.simulator import main as simulator_main

        return simulator_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EX_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as error:
        print(f"stocksync: {error}", file=sys.stderr)
        return EX_CONFIG
    except InstanceLocked as error:
        print(f"stocksync: {error}", file=sys.stderr)
        return EX_TEMPFAIL
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stocksync",
        description="Keep Forstok stock equal to Accurate Online stock.",
    )
    commands = parser.add_subparsers(title="commands")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        if name not in {"simulate", "demo"}:
            sub.add_argument(
                "--config",
                type=Path,
                default=Path(os.environ.get("STOCKSYNC_CONFIG", "config.yaml")),
                help="configuration file (default: $STOCKSYNC_CONFIG or config.yaml)",
            )
        return sub

    run = command("run", _run, "run the daemon until SIGTERM")
    run.add_argument(
        "--dry-run", action="store_true", help="compute and log pushes, send nothing"
    )

    full = command(
        "full-sync", _full_sync, "run one full sync in the foreground and exit"
    )
    full.add_argument(
        "--dry-run", action="store_true", help="compute and log pushes, send nothing"
    )

    status = command("status", _status, "show what the daemon is doing and has done")
    status.add_argument("--json", action="store_true")

    mapping = command(
        "mapping", _mapping, "report mapped, unmapped and conflicting items"
    )
    mapping.add_argument("--json", action="store_true")
    mapping_commands = mapping.add_subparsers(title="mapping commands")
    imp = mapping_commands.add_parser("import", help="import explicit overrides (CSV)")
    imp.add_argument("file", type=Path)
    imp.set_defaults(mapping_action="import")
    imf = mapping_commands.add_parser(
        "import-forstok", help="import a Forstok product export (CSV)"
    )
    imf.add_argument("file", type=Path)
    imf.set_defaults(mapping_action="import-forstok")

    history = command("history", _history, "show what was pushed for a SKU")
    history.add_argument("sku")
    history.add_argument("--json", action="store_true")
    history.add_argument("--limit", type=int, default=50)

    retry = command("retry", _retry, "release held pushes so they are tried again")
    retry.add_argument("sku", nargs="?")

    command(
        "simulate", _simulate, "serve the Accurate and Forstok simulator on loopback"
    )

    command("demo", _demo, "run the daemon against the simulator for about a minute")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    configure_logging(settings.log.level, settings.log.format, settings.secrets())
    if world_readable_secret_file(args.config):
        log.warning(
            "config_world_readable",
            path=str(args.config),
            action="chmod 600 it, or move the secrets to ${VAR} references",
        )
    return settings


def _run_async(coro: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return anyio.run(coro)


def _run(args: argparse.Namespace) -> int:
    from daemon.service import run_daemon

    settings = _settings(args)
    return _run_async(lambda: run_daemon(settings, dry_run=args.dry_run or None))


def _full_sync(args: argparse.Namespace) -> int:
    from daemon.lock import InstanceLock
    from daemon.service import open_engine

    settings = _settings(args)

    def progress(text: str) -> None:
        if sys.stderr.isatty():
            print(f"\r{text}   ", end="", file=sys.stderr, flush=True)

    async def body() -> int:
        with InstanceLock(settings.state_path):
            async with open_engine(settings, dry_run=args.dry_run or None) as engine:
                try:
                    await engine.prepare()
                    counts = await engine.full_sync("command line", progress=progress)
                except ServiceError as error:
                    print(f"\nstocksync: full sync failed: {error}", file=sys.stderr)
                    return EX_UNAVAILABLE
                if sys.stderr.isatty():
                    print(file=sys.stderr)
                print(json.dumps(counts.as_dict()))
                return EX_OK

    return _run_async(body)


def _status(args: argparse.Namespace) -> int:
    from daemon.report import status_report

    settings = _settings(args)
    report = anyio.run(status_report, settings)
    _print(report, args.json)
    return EX_OK


def _mapping(args: argparse.Namespace) -> int:
    from daemon.report import mapping_report

    settings = _settings(args)
    action = getattr(args, "mapping_action", None)
    if action == "import":
        return anyio.run(_import_overrides, settings, args.file)
    if action == "import-forstok":
        return anyio.run(_import_forstok, settings, args.file)
    _print(anyio.run(mapping_report, settings), args.json)
    return EX_OK


async def _import_overrides(settings: Settings, path: Path) -> int:
    from daemon.state import State

    overrides, problems = read_overrides(path)
    if problems:
        for problem in problems:
            print(f"stocksync: {problem}", file=sys.stderr)
        return EX_DATAERR
    state = await State.open(settings.state_path)
    try:
        await state.replace_overrides(overrides)
    finally:
        await state.close()
    print(f"imported {len(overrides)} mapping overrides from {path}")
    return EX_OK


def read_overrides(path: Path) -> tuple[list[Override], list[str]]:
    """Parse a mapping CSV: accurate_item_no, forstok_sku, pack_size, exclude."""
    overrides, problems = [], []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "accurate_item_no" not in reader.fieldnames:
            return [], [
                f"{path}: the header must name accurate_item_no "
                "(and optionally forstok_sku, pack_size, exclude)"
            ]
        for line, row in enumerate(reader, start=2):
            item_no = (row.get("accurate_item_no") or "").strip()
            if not item_no:
                problems.append(f"{path}:{line}: accurate_item_no is empty")
                continue
            try:
                pack = Decimal((row.get("pack_size") or "1").strip() or "1")
                if pack <= 0:
                    raise InvalidOperation
            except InvalidOperation:
                problems.append(
                    f"{path}:{line}: pack_size {row.get('pack_size')!r} "
                    "is not a positive number"
                )
                continue
            excluded = (row.get("exclude") or "").strip().lower() in {
                "1",
                "yes",
                "true",
                "y",
            }
            sku = (row.get("forstok_sku") or "").strip() or None
            overrides.append(Override(item_no, sku, pack, excluded))
    return overrides, problems


async def _import_forstok(settings: Settings, path: Path) -> int:
    from daemon.state import State

    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        column = next(
            (
                c
                for c in reader.fieldnames or []
                if c.strip().lower() in {"sku", "sku seller", "seller sku"}
            ),
            None,
        )
        if column is None:
            print(
                f"stocksync: {path}: no SKU column (expected a header named SKU)",
                file=sys.stderr,
            )
            return EX_DATAERR
        skus = [row[column] for row in reader if (row.get(column) or "").strip()]
    state = await State.open(settings.state_path)
    try:
        await state.replace_forstok_skus(skus, str(path))
    finally:
        await state.close()
    print(f"imported {len(skus)} Forstok SKUs from {path}")
    return EX_OK


def _history(args: argparse.Namespace) -> int:
    from daemon.state import State

    settings = _settings(args)

    async def body() -> list[dict[str, Any]]:
        state = await State.open(settings.state_path)
        try:
            return await state.history(args.sku, args.limit)
        finally:
            await state.close()

    rows = anyio.run(body)
    _print({"sku": args.sku, "pushes": rows}, args.json)
    return EX_OK


def _retry(args: argparse.Namespace) -> int:
    from daemon.state import State

    settings = _settings(args)

    async def body() -> int:
        state = await State.open(settings.state_path)
        try:
            return await state.release_held(args.sku)
        finally:
            await state.close()

    released = anyio.run(body)
    print(f"released {released} held push(es); the daemon tries them at its next poll")
    return EX_OK


def _simulate(args: argparse.Namespace) -> int:
    from daemon.simulator import main as simulator_main

    return simulator_main(["--help"])


def _demo(args: argparse.Namespace) -> int:
    from daemon.demo import run_demo

    return run_demo()


def _print(report: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    _print_human(report)


def _print_human(report: Any, indent: str = "") -> None:
    if isinstance(report, dict):
        for key, value in report.items():
            if isinstance(value, dict | list) and value:
                print(f"{indent}{key}:")
                _print_human(value, indent + "  ")
            else:
                print(f"{indent}{key}: {value}")
    elif isinstance(report, list):
        for entry in report:
            if isinstance(entry, dict):
                print(indent + "- " + ", ".join(f"{k}={v}" for k, v in entry.items()))
            else:
                print(f"{indent}- {entry}")
    else:
        print(f"{indent}{report}")
