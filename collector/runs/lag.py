"""How far run derivation is behind ingest, in seconds and in spans: the store writer reports
each commit of spans (its snapshot), the run deriver each snapshot it has derived up to.

Read by /metrics, /health and ingest admission, which refuses new spans (503 + Retry-After)
while the lag is past `processors.runs.max_lag_s`, so a backlog cannot grow without bound.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from collector.model import Overloaded

_RESOLUTION_S = 0.1  # commits closer together than this share one entry


class DerivationLag:
    """Commits of spans not derived yet, oldest first: (snapshot, when, spans committed in all
    since this process started). Thread-safe: the writer thread and the deriver's step thread
    report, the event loop reads."""

    def __init__(self, max_lag_s: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.max_lag_s = max_lag_s
        """The bound past which ingest is refused; 0: none."""
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: deque[tuple[int, float, int]] = deque()
        self._committed = 0  # spans committed since start
        self._derived = 0  # of those, in snapshots derived
        self._derived_to = -1

    def committed(self, snapshot: int, spans: int) -> None:
        """The writer committed `spans` spans in `snapshot` (or earlier: the id may be later)."""
        now = self._clock()
        with self._lock:
            self._committed += spans
            if snapshot <= self._derived_to:
                self._derived = self._committed
                return
            last = self._waiting[-1] if self._waiting else None
            if last is not None and now - last[1] < _RESOLUTION_S:
                # One entry for close commits: the lag is overstated by at most the resolution.
                self._waiting[-1] = (max(last[0], snapshot), last[1], self._committed)
            else:
                self._waiting.append((snapshot, now, self._committed))

    def derived(self, snapshot: int) -> None:
        """The deriver's watermark is at `snapshot`: every span committed up to it is derived."""
        with self._lock:
            self._derived_to = max(self._derived_to, snapshot)
            while self._waiting and self._waiting[0][0] <= self._derived_to:
                self._derived = self._waiting.popleft()[2]

    def seconds(self) -> float:
        """Age of the oldest commit of spans not derived yet; 0 when none waits."""
        with self._lock:
            return self._clock() - self._waiting[0][1] if self._waiting else 0.0

    def spans(self) -> int:
        """Spans committed and not derived yet (of those this process committed)."""
        with self._lock:
            return self._committed - self._derived

    def over(self) -> float | None:
        """Seconds past the bound, when there is one and the lag is past it."""
        if self.max_lag_s <= 0:
            return None
        lag = self.seconds()
        return lag - self.max_lag_s if lag > self.max_lag_s else None

    def check(self) -> None:
        """Refuse new spans (`Overloaded`: 503 / UNAVAILABLE with a retry delay) while the lag
        is past the bound; the delay is how far past it, from 1 to 30 seconds."""
        over = self.over()
        if over is not None:
            raise Overloaded(
                f"run derivation is {self.seconds():.0f} s behind ingest "
                f"(processors.runs.max_lag_s is {self.max_lag_s:g}); retry later",
                max(1.0, min(30.0, over)),
            )
