"""The fence on a real shared store (PostgreSQL catalog, S3 data): a holder paused past its lease
while another node takes the job over cannot commit, and nothing is done twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pytest

from collector.cluster.fence import Fence, LeaseLost, holding, raise_if_fenced
from collector.cluster.leases import Leases
from collector.cluster.postgres import Coordinator
from collector.runs.feed import Feed, WatermarkMoved
from collector.store.conflict import is_fenced
from collector.store.writer import Store
from tests.cluster import SharedStore

pytestmark = pytest.mark.slow  # a PostgreSQL and an S3 server

LEASE_S = 2.0


@pytest.fixture
def nodes(shared_store: SharedStore) -> Iterator[tuple[Store, Store, Coordinator]]:
    a, b = Store(shared_store.settings()), Store(shared_store.settings())
    a.open()
    b.open()
    a.call(lambda cur: cur.execute("CREATE TABLE IF NOT EXISTS done (item BIGINT, node VARCHAR)"))
    a.call(lambda cur: cur.execute("CREATE TABLE IF NOT EXISTS items (item BIGINT)"))
    coordinator = Coordinator(shared_store.conninfo)
    coordinator.prepare()
    try:
        yield a, b, coordinator
    finally:
        coordinator.close()
        a.close()
        b.close()


def _take_over(leases: Leases, job: str) -> int:
    deadline = time.monotonic() + LEASE_S * 3
    while time.monotonic() < deadline:
        token = leases.acquire(job)
        if token is not None:
            return token
        time.sleep(0.1)
    raise AssertionError("the lease was never free")


def test_a_holder_paused_past_its_lease_commits_nothing(
    nodes: tuple[Store, Store, Coordinator],
) -> None:
    a, b, coordinator = nodes
    node_a, node_b = Leases(coordinator, "a", LEASE_S), Leases(coordinator, "b", LEASE_S)
    token_a = node_a.acquire("outbox")
    assert token_a is not None
    assert node_b.acquire("outbox") is None  # held: not B's to take
    paused, resume = threading.Event(), threading.Event()

    def stale(cur: duckdb.DuckDBPyConnection) -> None:
        cur.execute("INSERT INTO done VALUES (1, 'a')")
        paused.set()
        assert resume.wait(30)  # a GC pause, a stopped VM: the lease runs out meanwhile

    with ThreadPoolExecutor(1) as pool:

        def held_by_a() -> None:
            with holding(Fence("outbox", token_a, "a")):
                a.call(stale)

        pending = pool.submit(held_by_a)
        assert paused.wait(30)
        token_b = _take_over(node_b, "outbox")
        assert token_b > token_a

        with holding(Fence("outbox", token_b, "b")):
            b.call(lambda cur: cur.execute("INSERT INTO done VALUES (1, 'b')"))
        resume.set()
        with pytest.raises(duckdb.Error) as refused:
            pending.result(30)
    assert is_fenced(refused.value)
    with pytest.raises(LeaseLost):
        raise_if_fenced(refused.value, "outbox")
    assert b.query("SELECT item, node FROM done") == [(1, "b")]
    assert a.query("SELECT item, node FROM done") == [(1, "b")]


def test_the_renewing_holder_keeps_committing(nodes: tuple[Store, Store, Coordinator]) -> None:
    a, _, coordinator = nodes
    leases = Leases(coordinator, "a", LEASE_S)
    token = leases.acquire("derive")
    assert token is not None
    for i in range(3):
        assert leases.acquire("derive", token) == token  # renewed: the same token
        with holding(Fence("derive", token, "a")):
            a.call(lambda cur, i=i: cur.execute("INSERT INTO done VALUES (?, 'a')", [i]))
    assert a.query("SELECT count(*) FROM done")[0][0] == 3
    # An unfenced commit (ingest) is never checked against any lease.
    a.call(lambda cur: cur.execute("INSERT INTO items VALUES (9)"))


def test_a_stale_change_feed_step_is_dropped_and_the_window_consumed_once(
    nodes: tuple[Store, Store, Coordinator],
) -> None:
    a, b, coordinator = nodes
    for i in range(5):
        a.call(lambda cur, i=i: cur.execute("INSERT INTO items VALUES (?)", [i]))
    node_a, node_b = Leases(coordinator, "a", LEASE_S), Leases(coordinator, "b", LEASE_S)
    token_a = node_a.acquire("consume")
    assert token_a is not None
    feed_a = Feed(a, "consume", max_snapshots=1000)
    paused, resume = threading.Event(), threading.Event()

    def step(feed: Feed, store: Store, fence: Fence, pause: bool) -> None:
        node = fence.node
        window = feed.window()
        items = [
            r[0]
            for r in store.query(
                "SELECT item FROM ducklake_table_changes('lake', 'main', 'items', ?, ?)",
                [window.since + 1, window.until],
            )
        ]

        def commit(cur: duckdb.DuckDBPyConnection) -> None:
            feed.move(cur, window)
            for item in items:
                cur.execute("INSERT INTO done VALUES (?, ?)", [item, node])
            if pause:
                paused.set()
                assert resume.wait(30)

        try:
            with holding(fence):
                store.call(commit)
        except Exception:
            feed.forget()
            raise
        feed.committed(window)

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(step, feed_a, a, Fence("consume", token_a, "a"), True)
        assert paused.wait(30)
        token_b = _take_over(node_b, "consume")
        feed_b = Feed(b, "consume", max_snapshots=1000)
        step(feed_b, b, Fence("consume", token_b, "b"), False)
        resume.set()
        with pytest.raises((duckdb.Error, WatermarkMoved)):
            pending.result(30)
    done = b.query("SELECT item, node FROM done ORDER BY item")
    assert done == [(i, "b") for i in range(5)]  # every item once, by the new holder
