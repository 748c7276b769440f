"""Commits as they land, for whoever waits on them: the change-feed loops wake on a commit
rather than polling the store on a timer.

The store's writer thread fires it after each of this node's commits; on a shared store the
PostgreSQL listener (`collector/cluster/listen.py`) fires it for every node's. Each waiter has
its own `asyncio.Event` on its own loop, set thread-safely.
"""

from __future__ import annotations

import asyncio
import threading


class CommitSignal:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.count = 0
        """Commits seen so far: a cache of store contents is stale once this moved."""

    def event(self) -> asyncio.Event:
        """A new event, set by every commit from now on (call on the event loop)."""
        event = asyncio.Event()
        with self._lock:
            self._waiters.append((asyncio.get_running_loop(), event))
        return event

    def fire(self) -> None:
        """A commit landed (any thread)."""
        with self._lock:
            self.count += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)
