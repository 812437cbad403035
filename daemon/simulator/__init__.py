"""Simulated Accurate Online and Forstok over loopback HTTP, for tests.

Shares no code with the daemon's API clients (docs/design.md): a misreading
of either API in one of them is caught by the other. See README.md here.
"""

from __future__ import annotations

from daemon.simulator.accurate import LineSpec
from daemon.simulator.app import Simulator, Snapshot
from daemon.simulator.business import starter_catalogue
from daemon.simulator.cli import main
from daemon.simulator.clock import FastClock, ManualClock, RealClock
from daemon.simulator.config import (
    AccurateConfig,
    Catalogue,
    ForstokConfig,
    ItemSpec,
    SimConfig,
)
from daemon.simulator.faults import FaultAction, FaultPlan, FaultRule
from daemon.simulator.observe import Trigger

__all__ = [
    "AccurateConfig",
    "Catalogue",
    "FastClock",
    "FaultAction",
    "FaultPlan",
    "FaultRule",
    "ForstokConfig",
    "ItemSpec",
    "LineSpec",
    "ManualClock",
    "RealClock",
    "SimConfig",
    "Simulator",
    "Snapshot",
    "Trigger",
    "main",
    "starter_catalogue",
]
