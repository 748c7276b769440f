"""What stands between a /v1/track request and a new event: event ids, idempotency, quotas.

In-process state the ROI API keeps: sortable event ids, a lock per (org, Idempotency-Key), the
keys of the last 24 h (so a fresh key needs no store query), and monthly event counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class EventIds:
    """ULIDs (48-bit milliseconds + 80 random bits, Crockford base32) that sort by creation
    even within one millisecond: a repeat millisecond increments the random part."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def new(self) -> str:
        with self._lock:
            ms = max(int(self._clock() * 1000), self._last_ms)
            if ms == self._last_ms:
                rand = (self._last_rand + 1) % (1 << 80)
            else:
                rand = int.from_bytes(os.urandom(10), "big")
            self._last_ms, self._last_rand = ms, rand
        return event_id(ms, rand)


def event_id(ms: int, rand: int) -> str:
    """`evt_` + the ULID of (48-bit milliseconds, 80-bit random part)."""
    value = (ms << 80) | rand
    chars = [_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1)]
    return "evt_" + "".join(chars)


class KeyLocks:
    """One asyncio lock per (org, key), dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class RecentIdempotencyKeys:
    """Idempotency keys seen in the last 24 h, oldest first, with responses while they fit.

    `may_exist` is False only when the key is surely new: while the map is complete (nothing
    evicted early and the startup load fitted), a miss needs no store query."""

    def __init__(self, cap: int = 200_000, window: timedelta = timedelta(hours=24)) -> None:
        self._cap = cap
        self._window = window
        self._items: OrderedDict[tuple[str, str], tuple[datetime, str | None]] = OrderedDict()
        self._incomplete_until: datetime | None = None

    def load(self, keys: list[tuple[str, str, datetime]], now: datetime) -> None:
        """The store's keys of the last 24 h, oldest first (one more than cap: overflow)."""
        if len(keys) > self._cap:
            keys = keys[-self._cap :]
            self._incomplete_until = keys[0][2] + self._window
        for org, key, at in keys:
            self._items[(org, key)] = (at, None)
        self._expire(now)

    def get(self, key: tuple[str, str], now: datetime) -> tuple[bool, str | None]:
        """(whether it may already exist, the response when it is in memory)."""
        self._expire(now)
        found = self._items.get(key)
        if found is not None:
            return True, found[1]
        return self._incomplete_until is not None, None

    def add(self, key: tuple[str, str], response: str, now: datetime) -> None:
        self._items[key] = (now, response)
        self._items.move_to_end(key)
        while len(self._items) > self._cap:
            _, (at, _) = self._items.popitem(last=False)
            self._incomplete_until = at + self._window  # lost before it expired: ask the store

    def _expire(self, now: datetime) -> None:
        limit = now - self._window
        while self._items:
            key, (at, _) = next(iter(self._items.items()))
            if at >= limit:
                break
            del self._items[key]
        if self._incomplete_until is not None and self._incomplete_until <= now:
            self._incomplete_until = None


class MonthlyQuota:
    """Events per org per calendar month (UTC), counted from the store once, then in memory.

    `reserve` before writing and `release` if the write fails, so concurrent requests cannot
    overshoot the cap."""

    def __init__(self, count_since: Callable[[str, datetime], int]) -> None:
        self._count_since = count_since
        self._counts: dict[tuple[str, str], int] = {}

    async def reserve(self, org: str, cap: int | None, now: datetime) -> bool:
        month = now.strftime("%Y-%m")
        key = (org, month)
        if key not in self._counts:
            start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            counted = await asyncio.to_thread(self._count_since, org, start)
            self._counts.setdefault(key, counted)
        if cap is not None and self._counts[key] >= cap:
            return False
        self._counts[key] += 1
        return True

    def release(self, org: str, now: datetime) -> None:
        key = (org, now.strftime("%Y-%m"))
        if key in self._counts:
            self._counts[key] -= 1
