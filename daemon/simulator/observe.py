"""What tests look at: the request log and request triggers."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal


@dataclass
class LoggedRequest:
    seq: int
    service: str  # "accurate" or "forstok"
    endpoint: str  # the path, without the query string
    method: str
    arrived: float  # time.monotonic()
    ended: float | None = None  # None while in flight
    status: int | None = None  # None when no complete answer was sent
    limited: bool = False  # refused by the simulated rate limiter
    fault: str | None = None  # the fault action applied, if any
    listener: str = ""  # which listener (host) received it
    body: bytes = b""  # as sent: tests compare what a client sent twice


class RequestLog:
    """Every request either service received, in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LoggedRequest] = []
        self._seq = 0

    def begin(
        self,
        service: str,
        endpoint: str,
        method: str,
        listener: str = "",
        body: bytes = b"",
    ) -> LoggedRequest:
        with self._lock:
            self._seq += 1
            entry = LoggedRequest(
                self._seq,
                service,
                endpoint,
                method,
                time.monotonic(),
                listener=listener,
                body=body,
            )
            self._entries.append(entry)
        return entry

    def end(self, entry: LoggedRequest, status: int | None) -> None:
        with self._lock:
            entry.ended = time.monotonic()
            entry.status = status

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()

    def entries(self, service: str | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [e for e in self._entries if service in (None, e.service)]

    def count(
        self, service: str, endpoint: str | None = None, status: int | None = None
    ) -> int:
        """Requests to `service`; `endpoint` is a glob on the path."""
        return sum(
            1
            for e in self.entries(service)
            if (endpoint is None or fnmatchcase(e.endpoint, endpoint))
            and (status is None or e.status == status)
        )

    def max_in_flight_observed(self, service: str) -> int:
        """Most requests accepted (not refused by the limiter) at one moment."""
        accepted = [e for e in self.entries(service) if not e.limited]
        # An end sorts before an arrival at the same instant: back-to-back
        # requests were never both in flight.
        events = sorted(
            [(e.arrived, 1) for e in accepted]
            + [(e.ended, -1) for e in accepted if e.ended is not None]
        )
        peak = current = 0
        for _, step in events:
            current += step
            peak = max(peak, current)
        return peak

    def max_per_second_observed(self, service: str) -> int:
        """Most accepted arrivals inside any window shorter than one second."""
        arrivals = sorted(e.arrived for e in self.entries(service) if not e.limited)
        peak = first = 0
        for last, moment in enumerate(arrivals):
            while moment - arrivals[first] >= 1.0:
                first += 1
            peak = max(peak, last - first + 1)
        return peak

    def summary(self) -> dict[str, Any]:
        entries = self.entries()
        by_key = Counter(
            (e.service, e.method, e.endpoint, str(e.status)) for e in entries
        )
        services = sorted({e.service for e in entries})
        return {
            "total": len(entries),
            "limited": sum(1 for e in entries if e.limited),
            "by_endpoint": [
                {"service": s, "method": m, "endpoint": p, "status": st, "count": n}
                for (s, m, p, st), n in sorted(by_key.items())
            ],
            "max_in_flight": {s: self.max_in_flight_observed(s) for s in services},
            "max_per_second": {s: self.max_per_second_observed(s) for s in services},
        }


HoldStage = Literal["arrival", "answer"]


class Trigger:
    """Fires when the `nth` matching request arrives, optionally holding it.

    A held request gets no answer until `release()` (or the simulator stops),
    so a test can SIGKILL a daemon at exactly that point. With `stage`
    "arrival" the request waits before it is handled, so its answer shows
    the state at release; with "answer" it is handled at once and only the
    answer waits: an old reading that arrives after newer ones.
    `params` narrows the match to requests carrying these query values
    (one item's `id`, say).
    """

    def __init__(
        self,
        service: str,
        endpoint: str,
        nth: int,
        *,
        hold: bool = True,
        method: str | None = None,
        params: Mapping[str, str] | None = None,
        stage: HoldStage = "arrival",
    ) -> None:
        self.service = service
        self.endpoint = endpoint
        self.nth = nth
        self.hold = hold
        self.method = method
        self.params = dict(params or {})
        self.stage = stage
        self.seen = 0
        self._fired = threading.Event()
        self._released = threading.Event()

    def matches(
        self,
        service: str,
        endpoint: str,
        method: str,
        params: Mapping[str, str] | None = None,
    ) -> bool:
        given = params or {}
        return (
            service == self.service
            and fnmatchcase(endpoint, self.endpoint)
            and (self.method is None or method.upper() == self.method.upper())
            and all(given.get(k) == v for k, v in self.params.items())
        )

    def wait(self, timeout: float | None = None) -> bool:
        return self._fired.wait(timeout)

    def is_set(self) -> bool:
        return self._fired.is_set()

    def release(self) -> None:
        self._released.set()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def fire(self) -> None:
        self._fired.set()
