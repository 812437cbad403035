"""`stocksync simulate` (or `python -m daemon.simulator`): serve until
SIGTERM or SIGINT.

Writes the URLs and credentials as JSON to `--port-file` once every
listener accepts connections, so a caller can wait for the file to appear.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio

from daemon.simulator.app import Simulator
from daemon.simulator.business import starter_catalogue
from daemon.simulator.config import SimConfig
from daemon.simulator.faults import FaultPlan

EX_USAGE = 64
"""A usage error, as sysexits and the `stocksync` command line say."""


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m daemon.simulator"
) -> int:
    """`prog` is how the caller was started, for usage and --help."""
    args = _parser(prog).parse_args(argv)
    warehouses = tuple(name.strip() for name in args.warehouses.split(",") if name)
    config = SimConfig(
        seed=args.seed,
        catalogue=starter_catalogue(
            args.seed, args.items, warehouses, quirks=args.quirks
        ),
        business_steps_per_minute=args.business_rate,
    )
    sim = Simulator(config)
    if args.faults:
        sim.install_faults(FaultPlan.load(args.faults))
    anyio.run(_serve, sim, Path(args.port_file))
    return 0


class _Parser(argparse.ArgumentParser):
    """Exit 64 on a usage error, as `stocksync` does, not argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Simulated Accurate Online and Forstok on 127.0.0.1.",
    )
    parser.add_argument(
        "--port-file",
        required=True,
        help="write the URLs and test credentials here (JSON) once serving",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the generated catalogue and activity; the same seed "
        "gives the same shop (default: 0)",
    )
    parser.add_argument(
        "--business-rate",
        type=float,
        default=0.0,
        help="background merchant actions per minute (0: none)",
    )
    parser.add_argument(
        "--items",
        type=int,
        default=20,
        help="how many Accurate items the catalogue starts with (default: 20)",
    )
    parser.add_argument(
        "--warehouses",
        default="GDG-1,GDG-2,GDG-3",
        help="Accurate warehouse names, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--quirks",
        action="store_true",
        help="give the first items the spacing and case quirks of cases "
        "C12-C13, and the first SKU two Forstok items (C14)",
    )
    parser.add_argument("--faults", help="a fault plan JSON file")
    return parser


async def _serve(sim: Simulator, port_file: Path) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with sim.running():
            _write_port_file(port_file, describe(sim))
            async for _ in signals:
                return


def describe(sim: Simulator) -> dict[str, Any]:
    """URLs plus what a daemon config needs to talk to this simulator."""
    config = sim.config
    return {
        **sim.urls(),
        "pid": os.getpid(),
        "accurate": {
            "database_id": config.accurate.database_id,
            "api_token": config.accurate.api_token,
            "signature_secret": config.accurate.signature_secret,
            "oauth_client_id": config.accurate.oauth_client_id,
            "oauth_client_secret": config.accurate.oauth_client_secret,
            "warehouses": list(config.catalogue.warehouses),
        },
        "forstok": {
            "seller_id": config.forstok.seller_id,
            "secret_key": config.forstok.secret_key,
            "warehouses": config.catalogue.forstok_warehouses,
        },
    }


def _write_port_file(path: Path, content: dict[str, Any]) -> None:
    # Write then rename, so a reader never sees half a file.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(content, indent=2))
    partial.replace(path)
