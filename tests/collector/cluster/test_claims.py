"""Idempotency claims on a real PostgreSQL: the first claim wins, a finished claim stays won, a
released or abandoned one can be taken."""

from __future__ import annotations

import asyncio
import time

from collector.cluster.claims import Claims
from tests.cluster import PostgresServer
from tests.collector.cluster.test_limits import _coordinator


def test_first_claim_wins_and_finished_claims_stay(postgres_server: PostgresServer) -> None:
    coordinator = _coordinator(postgres_server)
    a, b = Claims(coordinator, "a", stale_s=0.5), Claims(coordinator, "b", stale_s=0.5)

    async def main() -> None:
        assert await a.claim("track", "acme", "k1")
        assert not await b.claim("track", "acme", "k1")
        assert await b.claim("track", "globex", "k1")  # another org's key
        assert await b.claim("log", "acme", "k1")  # another scope
        await a.finish("track", "acme", "k1")
        await asyncio.sleep(0.6)
        assert not await b.claim("track", "acme", "k1")  # done: never again
        assert await a.claim("track", "acme", "k2")
        await a.release("track", "acme", "k2")  # failed before committing
        assert await b.claim("track", "acme", "k2")
        await asyncio.sleep(0.6)
        assert await a.claim("track", "acme", "k2")  # b vanished mid-request: stale

    asyncio.run(main())
    coordinator.close()


def test_wait_for_returns_what_the_holder_committed() -> None:
    claims = Claims(None, "a")  # type: ignore[arg-type]
    found: list[str] = []

    async def lookup() -> str | None:
        return found[0] if found else None

    async def main() -> tuple[str | None, float]:
        asyncio.get_running_loop().call_later(0.2, found.append, "event")
        started = time.monotonic()
        return await claims.wait_for(lookup, timeout_s=5), time.monotonic() - started

    value, took = asyncio.run(main())
    assert value == "event" and took < 2
    nobody = Claims(None, "a")  # type: ignore[arg-type]
    assert asyncio.run(nobody.wait_for(_none, timeout_s=0.2)) is None


async def _none() -> None:
    return None
