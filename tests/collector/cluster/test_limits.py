"""Shared rate limits on a real PostgreSQL: one sliding window per bucket, whichever node asks."""

from __future__ import annotations

import asyncio

from collector.cluster.limits import SharedLimiter, shared_limiters
from collector.cluster.postgres import Coordinator
from tests.cluster import PostgresServer


def _coordinator(postgres_server: PostgresServer) -> Coordinator:
    coordinator = Coordinator(postgres_server.conninfo(postgres_server.create_database()))
    coordinator.prepare(catalog=False)
    return coordinator


def test_two_nodes_share_one_budget(postgres_server: PostgresServer) -> None:
    one = _coordinator(postgres_server)
    conninfo = one._conninfo
    two = Coordinator(conninfo)  # another node: its own connection, the same tables
    a, b = SharedLimiter(one, "logs", 3, 60.0), SharedLimiter(two, "logs", 3, 60.0)
    assert [a.check("tok"), b.check("tok"), a.check("tok")] == [None, None, None]
    wait = b.check("tok")
    assert wait is not None and 1 <= wait <= 60
    assert a.check("other") is None  # another token: its own window
    assert SharedLimiter(one, "read", 3, 60.0).check("tok") is None  # another API's budget
    one.close()
    two.close()


def test_a_slot_frees_when_the_window_passes(postgres_server: PostgresServer) -> None:
    coordinator = _coordinator(postgres_server)
    make = shared_limiters(coordinator)
    limiter = make("track", 2, 1.0)

    async def admit() -> list[int | None]:
        return [await limiter.admit("key") for _ in range(3)]

    first = asyncio.run(admit())
    assert first[:2] == [None, None] and first[2] == 1
    asyncio.run(asyncio.sleep(1.05))
    assert asyncio.run(limiter.admit("key")) is None
    coordinator.close()
