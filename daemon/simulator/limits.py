"""The simulated services' rate limits.

Accurate documents "8 calls per second and 8 in flight" without saying how
it counts; the simulator counts accepted requests in a sliding window and
requests between arrival and the end of their response (reference §6).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable


class WindowLimiter:
    """At most `rate()` accepted arrivals per `window_s`, `in_flight()` at once.

    Limits are read on every call, so a test can change them while serving.
    A limit of 0 means unlimited.
    """

    def __init__(
        self,
        window_s: float,
        rate: Callable[[], int],
        in_flight: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._rate = rate
        self._in_flight_limit = in_flight
        self._clock = clock
        self._accepted: deque[float] = deque()
        self._in_flight = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> float | None:
        """None if accepted (call `release` later), else seconds to wait."""
        with self._lock:
            now = self._clock()
            while self._accepted and now - self._accepted[0] >= self._window_s:
                self._accepted.popleft()
            rate, in_flight = self._rate(), self._in_flight_limit()
            if rate and len(self._accepted) >= rate:
                return self._window_s - (now - self._accepted[0])
            if in_flight and self._in_flight >= in_flight:
                return 0.0
            self._accepted.append(now)
            self._in_flight += 1
            return None

    def release(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)


def retry_after_seconds(wait_s: float, floor: int) -> int:
    """Whole seconds for a Retry-After header, never below `floor`."""
    return max(floor, math.ceil(wait_s))
