"""Per-key sequence numbers handed out in commit order, so that rows appended in one group commit
keep the order in which their requests arrived (MCP events, evaluation logs).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Sequencer:
    """Strictly increasing arrival numbers: the wall clock in µs, bumped past the last one.

    Monotonic within a process and, as long as the clock does not step back, across restarts,
    so "ORDER BY seq" is arrival order for every org (one counter serves them all).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> tuple[int, datetime]:
        now_us = time.time_ns() // 1000
        with self._lock:
            self._last = max(self._last + 1, now_us)
            seq = self._last
        return seq, _EPOCH + timedelta(microseconds=seq)
