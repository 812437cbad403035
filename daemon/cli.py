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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, cast

import anyio
import structlog

from daemon.config import Settings, load_settings, world_readable_secret_file
from daemon.errors import ConfigError, InstanceLocked, ServiceError
from daemon.logs import configure_logging

if TYPE_CHECKING:
    from daemon.sync import Counts, Engine

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_CONFIG = 78
EX_PIPE = 141
"""What a shell reports for a command that SIGPIPE ended (128 + 13)."""

_ERASE_LINE_END = "\x1b[K"

log = structlog.get_logger("daemon.cli")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        # The simulator parses its own options; argparse would refuse them.
        from daemon.simulator import main as simulator_main

        return simulator_main(argv[1:], prog="stocksync simulate")
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        # Not output anybody asked for: keep it off stdout, as any usage error.
        parser.print_help(sys.stderr)
        return EX_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        return _reader_gone()
    except ConfigError as error:
        print(f"stocksync: {error}", file=sys.stderr)
        return EX_CONFIG
    except InstanceLocked as error:
        print(f"stocksync: {error}", file=sys.stderr)
        return EX_TEMPFAIL
    except KeyboardInterrupt:
        return 130


def _reader_gone() -> int:
    """The reader of stdout left early (`stocksync status | head`).

    That is no error to report. Python would still try to flush stdout at
    exit and print a second traceback, so point stdout at /dev/null first.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EX_PIPE


def _version() -> str:
    try:
        return metadata.version("stocksync")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; sysexits (and the README) say 64.

    Subcommand parsers are made of the same class, so every one agrees.
    """

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stocksync",
        description="Keep Forstok stock equal to Accurate Online stock.",
    )
    parser.add_argument(
        "--version", action="version", version=f"stocksync {_version()}"
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
    full.add_argument(
        "--repush",
        action="store_true",
        help="send every mapped pair's current value, even one Forstok already "
        "accepted: undoes changes made by hand in Forstok",
    )
    _json_option(full, "print the counts as JSON")

    status = command("status", _status, "show what the daemon is doing and has done")
    _json_option(status, "print the report as JSON, for scripts")

    _mapping_parser(command("mapping", _mapping, _MAPPING_HELP))

    history = command("history", _history, "show what was pushed for a SKU")
    history.add_argument(
        "sku", metavar="SKU", help="a Forstok SKU or Accurate item number"
    )
    _json_option(history, "print the pushes as JSON, for scripts")
    history.add_argument(
        "--limit",
        type=positive_int,
        default=50,
        metavar="N",
        help="show at most the N newest pushes (default: 50)",
    )

    retry = command(
        "retry", _retry, "push held and not-found rows again (all, or one SKU's)"
    )
    retry.add_argument(
        "sku",
        nargs="?",
        metavar="SKU",
        help="a Forstok SKU or Accurate item number (default: every held, "
        "retrying or not-found row)",
    )

    command(
        "simulate", _simulate, "serve the Accurate and Forstok simulator on loopback"
    )
    command("demo", _demo, "run the daemon against the simulator for about a minute")
    return parser


_MAPPING_HELP = "report mapped, unmapped and conflicting items"

_OVERRIDES_HELP = """\
CSV columns (a header line first; only accurate_item_no is required):
  accurate_item_no  the Accurate item number
  forstok_sku       the Forstok SKU to push to (empty: the item number)
  pack_size         base units in one Forstok unit; stock is divided by it
                    and rounded down (empty: 1)
  exclude           yes to never push the item (yes/no, y/n, 1/0,
                    true/false, x; empty: no)

The file replaces every override; a file with any bad row is refused whole
(exit status 65) and the overrides in place stay."""

_EXPORT_HELP = """\
Any CSV with a header line and one column named SKU (or SKU Seller, Seller
SKU, Forstok SKU; case and spaces do not matter). Other columns are ignored.
The file replaces the previous export; a file with no SKU rows, or with two
SKU columns, is refused (exit status 65) and the export in place stays.
--clear forgets the export instead: each item's number is its SKU again."""


def _mapping_parser(mapping: argparse.ArgumentParser) -> None:
    _json_option(mapping, "print the report as JSON, for scripts")
    actions = mapping.add_subparsers(title="mapping commands")
    for action, text, file_help, epilog in (
        (
            "import",
            "replace the mapping overrides with a CSV file",
            "the overrides CSV file (columns below)",
            _OVERRIDES_HELP,
        ),
        (
            "import-forstok",
            "replace the known Forstok SKUs with a product export",
            "a Forstok product export as CSV",
            _EXPORT_HELP,
        ),
    ):
        sub = actions.add_parser(
            action,
            help=text,
            description=text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if action == "import-forstok":
            _export_file_arguments(sub, file_help)
        else:
            sub.add_argument("file", type=Path, metavar="FILE", help=file_help)
        # SUPPRESS: an absent option must not reset what `mapping --config` set.
        _config_option(sub, argparse.SUPPRESS)
        sub.set_defaults(mapping_action=action)


def _export_file_arguments(sub: argparse.ArgumentParser, file_help: str) -> None:
    """FILE, or --clear: one of them, so that forgetting is never implied."""
    which = sub.add_mutually_exclusive_group(required=True)
    which.add_argument("file", type=Path, nargs="?", metavar="FILE", help=file_help)
    which.add_argument(
        "--clear",
        action="store_true",
        help="forget the imported export: each item's number is its Forstok SKU again",
    )


def _json_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--json", action="store_true", help=text)


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
    from daemon.state import check_state_path  # a broken state: exit 78, no crash

    check_state_path(settings.state_path)
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
    from daemon.service import open_engine, record_start

    display = ProgressLine(sys.stderr)
    # The display is a stream in all but name; it forwards what it is given.
    settings = _settings(args, cast(TextIO, display))
    if args.repush and (args.dry_run or settings.sync.dry_run):
        # A dry run sends nothing, so a repush would only mark every value
        # unconfirmed, and the next real run would send them all unasked.
        print("stocksync: --repush cannot be combined with a dry run", file=sys.stderr)
        return EX_USAGE

    async def body() -> int:
        # Refused (InstanceLocked, exit 75) while a daemon works on the state.
        with InstanceLock(settings.state_path):
            async with open_engine(settings, dry_run=args.dry_run or None) as engine:
                await record_start(engine, args.dry_run or None)
                try:
                    counts = await _one_full_sync(engine, args.repush, display)
                except ServiceError as error:
                    display.end()
                    print(f"stocksync: full sync failed: {error}", file=sys.stderr)
                    return EX_UNAVAILABLE
                display.end()
                _print_counts(counts.as_dict(), engine.dry_run, args.json)
                return await _pushes_sent(engine)

    return _run_async(body)


async def _one_full_sync(engine: Engine, repush: bool, display: ProgressLine) -> Counts:
    from daemon.service import repush_full_sync, save_push_problem

    try:
        await engine.prepare()
        if repush:
            return await repush_full_sync(engine, "command line --repush", display.show)
        return await engine.full_sync("command line", display.show)
    finally:
        with anyio.CancelScope(shield=True):
            await save_push_problem(engine)


async def _pushes_sent(engine: Engine) -> int:
    """EX_OK, or EX_UNAVAILABLE when everything was read but Forstok did not
    take the pushes; they stay queued for the daemon."""
    run = (await engine.state.last_runs()).get("full_sync")
    if run is None or run["outcome"] != "pushes_not_sent":
        return EX_OK
    waiting = await engine.state.count("push_queue")
    print(
        f"stocksync: pushes not sent ({run['error']}); {waiting} wait in the "
        "queue and go out when the daemon runs",
        file=sys.stderr,
    )
    return EX_UNAVAILABLE


class ProgressLine:
    """A progress line kept at the bottom of a terminal; nothing elsewhere
    (the log's `full_sync_progress` events serve files and the journal).

    Log lines are written through it: it erases the progress line before
    each and draws it again after, so the two never share a line.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.active = stream.isatty()
        self.text = ""
        self.drawn = False

    def show(self, text: str) -> None:
        if self.active:
            self.text = text
            self._draw()

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
        self.text, self.drawn = "", False

    def _draw(self) -> None:
        self.stream.write(f"\r{self.text}{_ERASE_LINE_END}")
        self.stream.flush()
        self.drawn = True

    # The stream side, for the logger.

    def write(self, data: str) -> int:
        if self.drawn:
            self.stream.write(f"\r{_ERASE_LINE_END}")
            self.drawn = False
        return self.stream.write(data)

    def flush(self) -> None:
        if self.text and not self.drawn:
            self._draw()  # a log line is complete: put the progress back
        else:
            self.stream.flush()

    def isatty(self) -> bool:
        return self.active


def _print_counts(counts: dict[str, int], dry_run: bool, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**counts, "dry_run": dry_run}))
        return
    if not dry_run:
        counts = {k: v for k, v in counts.items() if k != "would_push"}
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
    if action == "import-forstok" and args.clear:
        return anyio.run(_clear_forstok, settings)
    if action == "import-forstok":
        return anyio.run(_import_forstok, settings, args.file)
    _print(anyio.run(mapping_report, settings), args.json, mapping_text)
    return EX_OK


def _history(args: argparse.Namespace) -> int:
    from daemon.report import history_report, history_text

    settings = _settings(args)
    report = anyio.run(history_report, settings, args.sku, args.limit)
    _print(report, args.json, history_text)
    return EX_DATAERR if report["match"] == "unknown" else EX_OK


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
        return _refuse_import(problems)

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
        return _refuse_import(problems)

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


def _refuse_import(problems: list[str]) -> int:
    """Report every problem of a file; a file with any is imported not at all."""
    for problem in problems:
        print(f"stocksync: {problem}", file=sys.stderr)
    print("stocksync: nothing imported", file=sys.stderr)
    return EX_DATAERR


async def _clear_forstok(settings: Settings) -> int:
    """Back to no export: each item's Forstok SKU is its item number."""
    from daemon.state import State

    if not settings.state_path.exists():
        print("no Forstok export to clear: the daemon has never run")
        return EX_OK
    state = await State.open(settings.state_path)
    try:
        source = await state.get_meta("forstok_export")
        if source is not None:
            await state.clear_forstok_skus()
    finally:
        await state.close()
    if source is None:
        print("no Forstok export is imported; nothing changed")
        return EX_OK
    print(
        f"forgot the Forstok export from {source}; each item's number is its "
        "Forstok SKU again, from the running daemon's next poll"
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
    if not settings.state_path.exists():
        print("stocksync: nothing to retry: the daemon has never run")
        return EX_OK
    retried = anyio.run(retry_pushes, settings, args.sku)
    if not retried.known:
        print(
            f"stocksync: no Forstok SKU or Accurate item matches {args.sku!r}; "
            "`stocksync mapping` lists the mapped items",
            file=sys.stderr,
        )
        return EX_DATAERR
    if not retried.released:
        which = "" if args.sku is None else f" for {args.sku!r}"
        print(f"nothing to retry{which}: no held, retrying or not-found pushes")
        return EX_OK
    print(
        f"released {_released_text(retried)}; {_plural(retried.items, 'item')} "
        "will be read again and pushed at the daemon's next poll"
    )
    return EX_OK


def _released_text(retried: Retried) -> str:
    """`1 held push and 2 pushes waiting to retry`: what each row was, since
    a held row needed the operator and a retrying one would have gone out."""
    parts = [
        (retried.held, "held push", "held pushes"),
        (retried.retrying, "push waiting to retry", "pushes waiting to retry"),
        (retried.not_found, "pair not found in Forstok", "pairs not found in Forstok"),
    ]
    shown = [f"{n} {one if n == 1 else many}" for n, one, many in parts if n]
    if len(shown) < 2:
        return "".join(shown) or f"{retried.released} rows"
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@dataclass(frozen=True)
class Retried:
    released: int
    """Held, retrying and not-found rows released."""
    items: int
    """Items queued to be read again."""
    known: bool
    """False when a SKU was named that nothing matches."""
    held: int = 0
    retrying: int = 0
    not_found: int = 0
    """What the released rows were, as read just before releasing them."""


async def retry_pushes(settings: Settings, sku: str | None) -> Retried:
    """Release failing and not-found rows (all, or one SKU's) and queue fresh
    reads of their items, so the daemon pushes current stock, not the old
    held number."""
    from daemon.kinds import ALL_WAREHOUSES
    from daemon.mapping import normalize_sku, resolve_mapping, skus_matching
    from daemon.state import State

    state = await State.open(settings.state_path)
    try:
        catalogue = await state.items()
        mapping = resolve_mapping(
            catalogue, await state.overrides(), await state.forstok_skus()
        )
        failing = await state.failing()
        unknown = await state.unknown_targets()
        rows = [*failing, *unknown]
        matched = set() if sku is None else skus_matching(sku, mapping)
        wanted = None if sku is None else matched | {sku}
        keys = [key for key in rows if wanted is None or key[0] in wanted]
        known = (
            sku is None
            or bool(matched or keys)
            or any(normalize_sku(i.no) == normalize_sku(sku) for i in catalogue)
        )
        skus = {key[0] for key in keys}
        items = {t.item_id for t in mapping.targets.values() if t.sku in skus}
        pairs = dict.fromkeys(
            ((item, ALL_WAREHOUSES) for item in items), "retry requested"
        )
        released = await state.retry(keys, pairs)
    finally:
        await state.close()
    chosen = set(keys)
    return Retried(
        released,
        len(items),
        known,
        held=sum(1 for k, f in failing.items() if k in chosen and f.held),
        retrying=sum(1 for k, f in failing.items() if k in chosen and not f.held),
        not_found=len(chosen & unknown.keys()),
    )


# -- simulator ------------------------------------------------------------------


def _simulate(args: argparse.Namespace) -> int:
    from daemon.simulator import main as simulator_main

    return simulator_main(["--help"], prog="stocksync simulate")


def _demo(args: argparse.Namespace) -> int:
    from daemon.demo import run_demo

    return run_demo()
