"""Leases on a real PostgreSQL: one holder at a time, renewal keeps the token, expiry and release
hand the job over with a higher token."""

from __future__ import annotations

import time

from collector.cluster.leases import Leases
from collector.cluster.postgres import Coordinator
from tests.cluster import PostgresServer


def _coordinator(postgres_server: PostgresServer) -> Coordinator:
    coordinator = Coordinator(postgres_server.conninfo(postgres_server.create_database()))
    coordinator.execute(
        """CREATE TABLE IF NOT EXISTS agentledger_leases (job text PRIMARY KEY,
           holder text NOT NULL, token bigint NOT NULL, expires_at timestamptz NOT NULL,
           acquired_at timestamptz NOT NULL)"""
    )
    return coordinator


def test_one_holder_renewal_expiry_and_release(postgres_server: PostgresServer) -> None:
    coordinator = _coordinator(postgres_server)
    a, b = Leases(coordinator, "node-a", 1.0), Leases(coordinator, "node-b", 1.0)
    token = a.acquire("derive")
    assert token == 1
    assert b.acquire("derive") is None
    assert a.acquire("derive", token) == token  # renewed
    assert a.acquire("derive", 99) is None  # not with a token it does not hold
    time.sleep(1.2)
    taken = b.acquire("derive")
    assert taken == 2  # expired: B's, with a new token
    assert a.acquire("derive", token) is None  # A's renewal of the old token fails
    b.release("derive", taken)
    assert a.acquire("derive") == 3  # released: free at once
    rows = a.all()
    assert [(r.job, r.holder, r.token, r.expired) for r in rows] == [("derive", "node-a", 3, False)]
    coordinator.close()


def test_jobs_are_leased_independently(postgres_server: PostgresServer) -> None:
    coordinator = _coordinator(postgres_server)
    a, b = Leases(coordinator, "node-a", 5.0), Leases(coordinator, "node-b", 5.0)
    assert a.acquire("derive") == 1
    assert b.acquire("outbox") == 1
    assert a.acquire("outbox") is None
    assert b.acquire("derive") is None
    coordinator.close()
