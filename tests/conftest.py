"""Shared fixtures: a fake clock for the API clients."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from daemon.http import Timebase


class FakeTime:
    """A clock for client tests that moves only when somebody sleeps on it.

    Sleeping advances the clock by the requested time and then yields once,
    so a test can check waits in seconds without spending them.
    """

    def __init__(self, start: float = 1_000.0, wall_start: float = 1.77e9) -> None:
        self.now = start
        self.wall_offset = wall_start - start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.wall_offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()

    @property
    def timebase(self) -> Timebase:
        return Timebase(self.monotonic, self.wall, self.sleep)


@pytest.fixture
def fake_time() -> FakeTime:
    """A fake clock for the API clients, at an arbitrary monotonic and wall time."""
    return FakeTime()
