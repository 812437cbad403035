"""`python -m daemon.simulator` as the demo and subprocess tests run it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _wait_for(path: Path, timeout: float = 15.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "port file never appeared"
        time.sleep(0.05)
    content: dict[str, object] = json.loads(path.read_text())
    return content


def test_serves_until_sigterm_and_writes_the_port_file(tmp_path: Path) -> None:
    """The port file names every URL and credential; SIGTERM exits 0."""
    port_file = tmp_path / "sim.json"
    command = [sys.executable, "-m", "daemon.simulator", "--items", "3", "--seed", "4"]
    process = subprocess.Popen([*command, "--port-file", str(port_file)])
    try:
        urls = _wait_for(port_file)
        state = httpx.get(f"{urls['control_url']}/state", timeout=5).json()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    items = {row["item"] for row in state["accurate"]["stock"]}
    assert items == {"SKU-0001", "SKU-0002", "SKU-0003"}
    assert set(urls) >= {
        "accurate_account_url",
        "accurate_data_urls",
        "forstok_auth_url",
        "forstok_quantity_url",
        "control_url",
        "accurate",
        "forstok",
    }
