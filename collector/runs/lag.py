"""How far run derivation is behind ingest, in seconds and in spans: the store writer reports
each commit of spans (its snapshot), the run deriver each snapshot it has derived up to.

Read by /metrics, /health and ingest admission: past `processors.runs.pace_lag_s` a request of
new spans waits (up to `pace_wait_s`) for derivation to catch up, which slows exporters down to
the pace derivation keeps; past `max_lag_s` it is refused (503 + Retry-After), so a backlog
cannot grow without bound.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable

from collector.model import Overloaded

_RESOLUTION_S = 0.1  # commits closer together than this share one entry
_POLL_S = 0.05  # how often a paced request looks at the lag again


class DerivationLag:
    """Commits of spans not derived yet, oldest first: (snapshot, when, spans committed in all
    since this process started). Thread-safe: the writer thread and the deriver's step thread
    report, the event loop reads."""

    def __init__(
        self,
        max_lag_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        pace_lag_s: float = 0.0,
        pace_wait_s: float = 0.0,
    ):
        self.max_lag_s = max_lag_s
        """The bound past which ingest is refused; 0: none."""
        self.pace_lag_s = pace_lag_s
        """The lag past which a request of new spans waits for derivation; 0: none."""
        self.pace_wait_s = pace_wait_s
        self.paced = 0  # requests that waited
        self.paced_s = 0.0  # and how long in all
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

    async def admit(self) -> None:
        """Admission of a request of new spans: while the lag is past the pace target it waits,
        up to `pace_wait_s`, for derivation to catch up (exporters send as fast as they are
        answered, so ingest slows to the pace derivation keeps, without a refusal); then
        `check`. Waits on the event loop's clock: `clock` only measures the lag."""
        if 0 < self.pace_lag_s < self.seconds() and self.pace_wait_s > 0:
            loop = asyncio.get_running_loop()
            started = loop.time()
            deadline = started + self.pace_wait_s
            while self.seconds() > self.pace_lag_s and loop.time() < deadline:
                await asyncio.sleep(_POLL_S)
            self.paced += 1
            self.paced_s += loop.time() - started
        self.check()

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
