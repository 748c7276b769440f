"""Idempotency across nodes: a claim in PostgreSQL on (scope, org, key) — a `/v1/track`
Idempotency-Key, a logs API caller `id` — so that of two requests raced on two nodes one does the
work and the other waits for its result.

The ROI and logs APIs ask `claim()` before writing and `finish()` once their commit is durable
(or `release()` if it failed); a claim whose holder vanished mid-request is taken over once
`stale_s` old and still unfinished. Rows older than a day go (the idempotency window is 24 h).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from collector.cluster.postgres import Coordinator

T = TypeVar("T")

_CLAIM = """
INSERT INTO agentledger_claims AS c (scope, org, key, holder, claimed_at, done)
VALUES (%(scope)s, %(org)s, %(key)s, %(node)s, now(), false)
ON CONFLICT (scope, org, key) DO UPDATE
  SET holder = EXCLUDED.holder, claimed_at = now(), done = false
  WHERE NOT c.done AND c.claimed_at < now() - make_interval(secs => %(stale)s)
RETURNING 1
"""


class Claims:
    def __init__(self, coordinator: Coordinator, node: str, *, stale_s: float = 60.0) -> None:
        self._db = coordinator
        self._node = node
        self._stale_s = stale_s

    async def claim(self, scope: str, org: str, key: str) -> bool:
        """True: this request is the one to do the work (then `finish` or `release`)."""
        args = {"scope": scope, "org": org, "key": key, "node": self._node, "stale": self._stale_s}
        rows = await asyncio.to_thread(self._db.execute, _CLAIM, args)
        return bool(rows)

    async def finish(self, scope: str, org: str, key: str) -> None:
        await asyncio.to_thread(
            self._db.execute,
            "UPDATE agentledger_claims SET done = true WHERE scope = %s AND org = %s AND key = %s",
            [scope, org, key],
        )

    async def release(self, scope: str, org: str, key: str) -> None:
        """The work failed before anything was committed: a retry may claim it at once."""
        await asyncio.to_thread(
            self._db.execute,
            "DELETE FROM agentledger_claims WHERE scope = %s AND org = %s AND key = %s "
            "AND holder = %s AND NOT done",
            [scope, org, key, self._node],
        )

    async def wait_for(
        self, lookup: Callable[[], Awaitable[T | None]], timeout_s: float = 15.0
    ) -> T | None:
        """What the claim's holder committed, once it is there (None after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while True:
            found = await lookup()
            if found is not None or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    def prune(self) -> None:
        self._db.execute(
            "DELETE FROM agentledger_claims WHERE claimed_at < now() - interval '1 day'"
        )
