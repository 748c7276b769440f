"""Rate limits shared by every node of a cluster: the same sliding-window log as the in-memory
limiter (`collector/api/ratelimit.py`), kept in PostgreSQL, so "60 requests a minute per token"
holds across all server instances, as the logs API's doc says.

`collector/service.py` hands APIs a factory of these on a shared store; each check is one
statement (a PL/pgSQL function, `collector/cluster/postgres.py`) serialised per bucket.
"""

from __future__ import annotations

import asyncio
import math

from collector.api.ratelimit import LimiterFactory
from collector.cluster.postgres import Coordinator


class SharedLimiter:
    """At most `limit` requests in any `window_s` seconds per key, across the cluster."""

    def __init__(self, coordinator: Coordinator, name: str, limit: int, window_s: float) -> None:
        self._db = coordinator
        self.name = name
        self.limit = limit
        self.window_s = window_s

    def check(self, key: str) -> int | None:
        """Admit one request of `key` (None), or refuse it: whole seconds to wait (≥ 1)."""
        rows = self._db.execute(
            "SELECT agentledger_admit(%s, %s, %s)",
            [f"{self.name}:{self.limit}/{self.window_s:g}:{key}", self.limit, self.window_s],
        )
        wait = float(rows[0][0])
        return None if wait <= 0 else max(1, math.ceil(wait))

    async def admit(self, key: str) -> int | None:
        return await asyncio.to_thread(self.check, key)


def shared_limiters(coordinator: Coordinator) -> LimiterFactory:
    def make(name: str, limit: int, window_s: float) -> SharedLimiter:
        return SharedLimiter(coordinator, name, limit, window_s)

    return make
