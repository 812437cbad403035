"""The host's time zone changes nothing (case C07).

The same fixture runs in three fresh processes, under TZ=UTC, TZ=Asia/Jakarta
and TZ=America/Los_Angeles, each once with Accurate stamping `lastUpdate` in
WIB and once in another zone: every run sends Forstok the same pushes, and the
cursors depend only on what Accurate wrote, never on the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
HOST_ZONES = ("UTC", "Asia/Jakarta", "America/Los_Angeles")


def run_matrix(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """The scenario under every host zone, the three processes side by side."""
    started = {}
    for zone in HOST_ZONES:
        out = tmp_path / f"{zone.replace('/', '_')}.json"
        process = subprocess.Popen(
            [sys.executable, str(HERE / "tz_scenario.py"), str(out)],
            cwd=HERE.parent,
            env={**os.environ, "TZ": zone},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started[zone] = (process, out)
    results = {}
    for zone, (process, out) in started.items():
        output, _ = process.communicate(timeout=90)
        assert process.returncode == 0, output.decode(errors="replace")[-3000:]
        results[zone] = json.loads(out.read_text())
    return results


@pytest.mark.timeout(120)
def test_c07_same_pushes_under_every_host_zone(tmp_path: Path) -> None:
    """Three host zones, two Accurate zones: six identical push histories, and
    cursors that differ only with the zone Accurate stamps in."""
    results = run_matrix(tmp_path)

    offsets = {r["host_offset_s"] for r in results.values()}
    assert len(offsets) == len(HOST_ZONES), "TZ did not apply to the processes"
    reference = results["UTC"]["runs"]
    for result in results.values():
        assert result["runs"] == reference
    wib, other = reference.values()
    assert [s for s in wib if "pushes" in s] == [s for s in other if "pushes" in s]
    assert wib[-1]["cursor"] != other[-1]["cursor"]
