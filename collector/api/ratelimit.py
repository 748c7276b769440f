"""A sliding-window request limiter per key, in memory (the read API: 300 requests/minute/token),
and the `Limiter` shape every limiter has (a shared store's are in `collector/cluster/limits.py`).

APIs call `admit(key_id)` after authenticating; a refusal carries the seconds until a slot
frees, which becomes the 429's Retry-After. This one's state is per process, lost on restart.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol


class Limiter(Protocol):
    """At most `limit` requests per `window_s` per key: `admit` is None, or seconds to wait."""

    limit: int
    window_s: float

    async def admit(self, key: str) -> int | None: ...


LimiterFactory = Callable[[str, int, float], Limiter]
"""(name, limit, window_s) → a limiter; the name keeps one API's budgets apart from another's."""


def local_limiters(name: str, limit: int, window_s: float) -> Limiter:
    """This process's own limiters (a single node)."""
    return SlidingWindowLimiter(limit, window_s)


class SlidingWindowLimiter:
    """At most `limit` requests in any `window_s` seconds per key.

    A true sliding log (one timestamp per admitted request, at most `limit` per key) rather than
    fixed buckets, so a client cannot burst twice the limit across a bucket edge. Memory is
    bounded by limit times keys, and keys are authenticated tokens only.
    """

    def __init__(
        self, limit: int = 300, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._log: dict[str, deque[float]] = {}

    async def admit(self, key: str) -> int | None:
        return self.check(key)

    def check(self, key: str) -> int | None:
        """Admit one request of `key` (None), or refuse it: whole seconds to wait (≥ 1)."""
        now = self._clock()
        with self._lock:
            log = self._log.setdefault(key, deque())
            while log and log[0] <= now - self.window_s:
                log.popleft()
            if len(log) < self.limit:
                log.append(now)
                return None
            # The oldest admitted request leaves the window first; refusals are not logged,
            # so a client that keeps retrying is admitted as soon as a slot frees.
            return max(1, math.ceil(log[0] + self.window_s - now))
