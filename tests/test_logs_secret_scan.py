"""The suite-wide secret check in `harness` really fails a leaking test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

TESTS = Path(__file__).resolve().parent

LEAKING_SUITE = """
import logging
import sys


def test_prints_a_secret():
    print("token sim-accurate-api-token")


def test_logs_a_secret_to_stderr():
    print("key=sim-forstok-secret-key", file=sys.stderr)


def test_logs_a_secret_through_logging():
    logging.getLogger("x").warning("secret sim-accurate-signature-secret")


def test_clean():
    print("nothing to see")
"""


def test_a_test_whose_output_shows_a_secret_fails(tmp_path: Path) -> None:
    """Stdout, stderr and log records are searched; clean tests still pass."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_leaks.py").write_text(LEAKING_SUITE)

    # -rN: the short summary quotes each failure again, and how much of it
    # fits depends on the terminal width of whoever runs the suite.
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "harness",
        "-p",
        "no:cacheprovider",
    ]
    result = subprocess.run(
        [*command, "-rN"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Not printed: the inner run's report quotes the leaked secrets.
    assert result.returncode == 1, result.stderr[-2000:]
    assert "3 failed, 1 passed" in result.stdout
    assert result.stdout.count("a test secret appears in captured output") == 3
    for section in ("Captured stdout call", "Captured stderr call", "Captured log"):
        assert section in result.stdout
