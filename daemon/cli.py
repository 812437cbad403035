"""The `stocksync` command line.

Exit statuses follow sysexits: 78 for a bad configuration, 75 when another
process holds the state file, so that systemd does not restart-loop on them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

import anyio
import structlog

from daemon.config import Settings, load_settings, world_readable_secret_file
from daemon.errors import ConfigError, InstanceLocked, ServiceError
from daemon.logs import configure_logging

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
            _config_option(sub, Path(os.environ.get("STOCKSYNC_CONFIG", "config.yaml")))
        return sub

    run = command("run", _run, "run the daemon until SIGTERM")
    _dry_run_option(run)

    full = command(
        "full-sync", _full_sync, "run one full sync in the foreground and exit"
    )
    _dry_run_option(full)
    full.add_argument("--json", action="store_true", help="print the counts as JSON")

    status = command("status", _status, "show what the daemon is doing and has done")
    status.add_argument("--json", action="store_true")

    mapping = command(
        "mapping", _mapping, "report mapped, unmapped and conflicting items"
    )
    mapping.add_argument("--json", action="store_true")
    mapping_commands = mapping.add_subparsers(title="mapping commands")
    for action, text in (
        ("import", "replace the mapping overrides with a CSV file"),
        ("import-forstok", "replace the known Forstok SKUs with a product export"),
    ):
        sub = mapping_commands.add_parser(action, help=text, description=text)
        sub.add_argument("file", type=Path)
        # SUPPRESS: an absent option must not reset what `mapping --config` set.
        _config_option(sub, argparse.SUPPRESS)
        sub.set_defaults(mapping_action=action)

    history = command("history", _history, "show what was pushed for a SKU")
    history.add_argument("sku", help="a Forstok SKU or Accurate item number")
    history.add_argument("--json", action="store_true")
    history.add_argument("--limit", type=int, default=50)

    retry = command(
        "retry", _retry, "push held and not-found rows again (all, or one SKU's)"
    )
    retry.add_argument("sku", nargs="?")

    command(
        "simulate", _simulate, "serve the Accurate and Forstok simulator on loopback"
    )
    command("demo", _demo, "run the daemon against the simulator for about a minute")
    return parser


def _config_option(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        help="configuration file (default: $STOCKSYNC_CONFIG or config.yaml)",
    )


def _dry_run_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="compute, log and record every push, send nothing to Forstok",
    )


def _settings(args: argparse.Namespace, log_stream: TextIO | None = None) -> Settings:
    """Settings, with logging set up. Only the daemon logs to stdout (the
    journal); operator commands log to stderr, so stdout stays their output."""
    settings = load_settings(args.config)
    configure_logging(
        settings.log.level,
        settings.log.format,
        settings.secrets(),
        stream=log_stream or sys.stderr,
    )
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

    settings = _settings(args, sys.stdout)
    return _run_async(lambda: run_daemon(settings, dry_run=args.dry_run or None))


# -- full sync ------------------------------------------------------------------


def _full_sync(args: argparse.Namespace) -> int:
    from daemon.lock import InstanceLock
    from daemon.service import open_engine

    settings = _settings(args)
    display = ProgressLine(sys.stderr)

    async def body() -> int:
        # Refused (InstanceLocked, exit 75) while a daemon works on the state.
        with InstanceLock(settings.state_path):
            async with open_engine(settings, dry_run=args.dry_run or None) as engine:
                try:
                    await engine.prepare()
                    counts = await engine.full_sync("command line", display.show)
                except ServiceError as error:
                    display.end()
                    print(f"stocksync: full sync failed: {error}", file=sys.stderr)
                    return EX_UNAVAILABLE
                display.end()
                _print_counts(counts.as_dict(), engine.dry_run, args.json)
                return EX_OK

    return _run_async(body)


class ProgressLine:
    """One line on a terminal, redrawn in place; nothing when not a terminal
    (the log's `full_sync_progress` events serve files and the journal)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.active = stream.isatty()
        self.width = 0

    def show(self, text: str) -> None:
        if not self.active:
            return
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)

    def end(self) -> None:
        if self.active and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


def _print_counts(counts: dict[str, int], dry_run: bool, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**counts, "dry_run": dry_run}))
        return
    shown = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items())
    print(f"full sync done: {shown}")
    if dry_run:
        print(
            "dry run: nothing was sent to Forstok; "
            "`stocksync history SKU` shows what would have been"
        )


# -- reports --------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from daemon.report import status_report, status_text

    settings = _settings(args)
    report = anyio.run(status_report, settings)
    _print(report, args.json, status_text)
    return EX_OK


def _mapping(args: argparse.Namespace) -> int:
    from daemon.report import mapping_report, mapping_text

    settings = _settings(args)
    action = getattr(args, "mapping_action", None)
    if action == "import":
        return anyio.run(_import_overrides, settings, args.file)
    if action == "import-forstok":
        return anyio.run(_import_forstok, settings, args.file)
    _print(anyio.run(mapping_report, settings), args.json, mapping_text)
    return EX_OK


def _history(args: argparse.Namespace) -> int:
    from daemon.report import history_report, history_text

    settings = _settings(args)
    report = anyio.run(history_report, settings, args.sku, args.limit)
    _print(report, args.json, history_text)
    return EX_OK


def _print(
    report: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], str]
) -> None:
    print(json.dumps(report, indent=2, default=str) if as_json else render(report))


# -- commands that change the state -----------------------------------------------
#
# Each runs while the daemon may be running: it opens the state file, writes
# in one short transaction, and leaves it to the daemon to notice (the
# mapping version, or rows queued for its next poll).


async def _import_overrides(settings: Settings, path: Path) -> int:
    from daemon.mapping import parse_overrides, unused_overrides
    from daemon.state import State

    lines = _read_lines(path)
    if lines is None:
        return EX_DATAERR
    overrides, problems = parse_overrides(lines, str(path))
    if problems:
        for problem in problems:
            print(f"stocksync: {problem}", file=sys.stderr)
        print("stocksync: nothing imported", file=sys.stderr)
        return EX_DATAERR

    state = await State.open(settings.state_path)
    try:
        await state.replace_overrides(overrides)
        items = await state.items()
    finally:
        await state.close()

    excluded = sum(1 for o in overrides if o.excluded)
    print(
        f"imported {len(overrides)} mapping overrides from {path} "
        f"({excluded} excluded); a running daemon applies them at its next poll"
    )
    if items:
        for unused in unused_overrides(items, {o.item_no: o for o in overrides}):
            print(
                f"stocksync: warning: no Accurate item is numbered {unused.item_no!r}",
                file=sys.stderr,
            )
    return EX_OK


async def _import_forstok(settings: Settings, path: Path) -> int:
    from daemon.mapping import parse_forstok_export
    from daemon.state import State

    lines = _read_lines(path)
    if lines is None:
        return EX_DATAERR
    skus, problems = parse_forstok_export(lines, str(path))
    if problems:
        for problem in problems:
            print(f"stocksync: {problem}", file=sys.stderr)
        return EX_DATAERR

    state = await State.open(settings.state_path)
    try:
        await state.replace_forstok_skus(skus, str(path))
    finally:
        await state.close()
    print(
        f"imported {len(skus)} Forstok SKUs from {path}; "
        "a running daemon applies them at its next poll"
    )
    return EX_OK


def _read_lines(path: Path) -> list[str] | None:
    """A CSV file's lines; utf-8-sig drops the BOM spreadsheet programs add."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return handle.readlines()
    except (OSError, UnicodeDecodeError) as error:
        print(f"stocksync: {path}: cannot read ({error})", file=sys.stderr)
        return None


def _retry(args: argparse.Namespace) -> int:
    settings = _settings(args)
    released, items = anyio.run(retry_pushes, settings, args.sku)
    print(
        f"released {released} held or not-found push(es); {items} item(s) will be "
        "read again and pushed at the daemon's next poll"
    )
    return EX_OK


async def retry_pushes(settings: Settings, sku: str | None) -> tuple[int, int]:
    """Release failing and not-found rows (all, or one SKU's) and queue fresh
    reads of their items, so the daemon pushes current stock, not the old
    held number. Returns (rows released, items queued)."""
    from daemon.kinds import ALL_WAREHOUSES
    from daemon.mapping import resolve_mapping, skus_matching
    from daemon.state import State

    state = await State.open(settings.state_path)
    try:
        mapping = resolve_mapping(
            await state.items(), await state.overrides(), await state.forstok_skus()
        )
        rows = [*await state.failing(), *await state.unknown_targets()]
        wanted = None if sku is None else skus_matching(sku, mapping) | {sku}
        keys = [key for key in rows if wanted is None or key[0] in wanted]
        skus = {key[0] for key in keys}
        items = {t.item_id for t in mapping.targets.values() if t.sku in skus}
        pairs = dict.fromkeys(
            ((item, ALL_WAREHOUSES) for item in items), "retry requested"
        )
        released = await state.retry(keys, pairs)
    finally:
        await state.close()
    return released, len(items)


# -- simulator ------------------------------------------------------------------


def _simulate(args: argparse.Namespace) -> int:
    from daemon.simulator import main as simulator_main

    return simulator_main(sys.argv[2:])


def _demo(args: argparse.Namespace) -> int:
    from daemon.demo import run_demo

    return run_demo()
