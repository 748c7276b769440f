"""Two and three `agentledger serve` nodes on one store in PostgreSQL + S3, started by the test:
every node reads every node's commits, a span re-sent to another node counts once, the lease
holder killed (-9) under load hands its work on and every acknowledged run is listed once with
its exact counts, limits and idempotency hold across nodes, a revoked key is refused everywhere,
and an external DuckDB reader sees it all."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import httpx
import pytest

from collector.store.lake import HTTPFS_EXTENSION, POSTGRES_EXTENSION, extension_path, s3_secret_sql
from tests.cluster import SharedStore
from tests.e2e.cluster.nodes import (
    ADMIN,
    INGEST,
    LEASE_S,
    READ,
    expected,
    health,
    holder,
    make_node,
    post_spans,
    runs,
    trace,
    until,
)
from tests.e2e.server import Server
from tests.fixtures.receiver import Receiver

pytestmark = pytest.mark.slow

JOBS = {"maintenance", "evals", "runs", "run-consumers", "spans-dedup", "outbox"}


class Cluster:
    def __init__(self, tmp: Path, shared: SharedStore) -> None:
        self._tmp, self._shared = tmp, shared
        self.nodes: list[Server] = []

    def start(self, n: int, extra: str = "") -> list[Server]:
        # One at a time: the first creates the store's tables, the others find them.
        for i in range(len(self.nodes), len(self.nodes) + n):
            self.nodes.append(make_node(self._tmp, self._shared, i, extra).start())
        return list(self.nodes)


@pytest.fixture
def cluster(tmp_path: Path, shared_store: SharedStore) -> Iterator[Cluster]:
    c = Cluster(tmp_path, shared_store)
    try:
        yield c
    finally:
        for node in c.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.stop()


def _hex(trace_id: bytes) -> str:
    return trace_id.hex()


def test_every_node_reads_every_commit_and_a_resent_span_counts_once(
    cluster: Cluster, shared_store: SharedStore
) -> None:
    a, b = cluster.start(2)
    one, two = trace(1), trace(2)
    assert post_spans(a, one) == 200
    assert post_spans(b, two) == 200
    assert post_spans(b, one) == 200  # an exporter's retry, sent by the balancer elsewhere
    want = {
        _hex(one[0].trace_id): ("success", *expected(one)),
        _hex(two[0].trace_id): ("success", *expected(two)),
    }
    for node in (a, b):
        until(lambda node=node: runs(node) == want or None, 30, f"both runs on {node.http}")
    # Each job is held once across the cluster.
    held = [set(health(n)["jobs"]) for n in (a, b)]
    assert held[0] | held[1] == JOBS and not held[0] & held[1]
    assert {health(n)["node"] for n in (a, b)} == {"node0", "node1"}
    # /metrics names the node and the jobs it holds.
    text = httpx.get(f"{a.base_url}/metrics", timeout=10).text
    assert 'node="node0"' in text and "agentledger_job_held" in text
    # An external DuckDB attaches the store read-only and sees every node's commits.
    reader = duckdb.connect(config={"autoinstall_known_extensions": False})
    for ext in (("duckdb_extension_ducklake", "ducklake"), POSTGRES_EXTENSION, HTTPFS_EXTENSION):
        reader.execute(f"LOAD '{extension_path(*ext)}'")
    reader.execute(s3_secret_sql(shared_store.s3.s3_config()))
    reader.execute(
        f"ATTACH 'ducklake:{shared_store.catalog}' AS al "
        f"(DATA_PATH '{shared_store.data_path}', READ_ONLY)"
    )
    found = reader.execute("SELECT count(*) FROM al.runs WHERE status = 'success'").fetchone()
    assert found == (2,)
    # The copy node b stored of the re-sent spans is removed within a step of spans-dedup.
    total = len(one) + len(two)

    def spans() -> tuple[int, int] | None:
        found = reader.execute(
            "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM al.spans"
        ).fetchone()
        return found if found == (total, total) else None

    until(spans, 30, "one row per span")
    reader.close()


def test_the_lease_holder_killed_under_load(cluster: Cluster) -> None:
    nodes = cluster.start(2)
    victim = until(lambda: holder(nodes, "runs"), 30, "a holder of run derivation")
    survivor = next(n for n in nodes if n is not victim)
    acked: dict[str, tuple[str, int, int, int]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def load(node: Server, first: int) -> None:
        seed = first
        while not stop.is_set() and seed < first + 200:
            spans = trace(seed)
            try:
                code = post_spans(node, spans, timeout=10)
            except httpx.HTTPError:
                code = 0  # the node died under the request: not acknowledged
            if code == 200:
                with lock:
                    acked[_hex(spans[0].trace_id)] = ("success", *expected(spans))
            seed += 1

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(load, victim, 1000), pool.submit(load, survivor, 5000)]
        time.sleep(3)
        victim.kill()  # kill -9: no drain, no lease handed back
        killed = time.monotonic()
        took = until(
            lambda: (time.monotonic() - killed) if set(health(survivor)["jobs"]) >= JOBS else None,
            LEASE_S * 5,
            "the survivor to take every job",
        )
        time.sleep(2)
        stop.set()
        for f in futures:
            f.result()
    assert took < LEASE_S + 3  # about the lease (plus one renewal interval)
    listed = until(
        lambda: (r := runs(survivor)) and all(r.get(t) == v for t, v in acked.items()) and r,
        60,
        "every acknowledged run derived",
    )
    for trace_id, want in acked.items():
        assert listed[trace_id] == want  # once (runs() refuses a run listed twice), exactly
    assert len(acked) > 10


def test_a_rate_limit_is_global(cluster: Cluster) -> None:
    a, b = cluster.start(2, "evals: {rate_limit_per_minute: 10}\n")
    body = {"project": "p", "output": "x"}

    def post(node: Server) -> int:
        return httpx.post(
            f"{node.base_url}/api/logs", headers=INGEST, json=body, timeout=30
        ).status_code

    codes = [post(a) for _ in range(8)] + [post(b) for _ in range(8)]
    assert codes.count(429) == 6
    assert len([c for c in codes if c < 300]) == 10


def test_an_idempotency_key_raced_on_two_nodes_makes_one_event(cluster: Cluster) -> None:
    a, b = cluster.start(2)
    body = {"agent_id": "a", "task_type": "email_classification", "outcome": "success"}
    for attempt in range(5):
        headers = {**INGEST, "Idempotency-Key": f"run-{attempt}"}

        def track(node: Server, headers: dict[str, str] = headers) -> httpx.Response:
            return httpx.post(f"{node.base_url}/v1/track", headers=headers, json=body, timeout=30)

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(track, (a, b)))
        assert [r.status_code for r in answers] == [201, 201]
        assert answers[0].json()["event_id"] == answers[1].json()["event_id"]
    # A caller's log id raced the same way makes one log.
    log = {"id": "log-raced", "project": "p", "output": "x"}
    with ThreadPoolExecutor(2) as pool:
        posted = list(
            pool.map(
                lambda n: httpx.post(
                    f"{n.base_url}/api/logs", headers=INGEST, json=log, timeout=30
                ),
                (a, b),
            )
        )
    assert [r.status_code for r in posted] == [200, 200]
    listed = httpx.get(f"{a.base_url}/api/logs", headers=ADMIN, timeout=30).json()
    assert [x["id"] for x in listed["executions"]].count("log-raced") == 1


def test_a_key_revoked_on_one_node_is_refused_by_the_other(cluster: Cluster) -> None:
    a, b = cluster.start(2)
    made = httpx.post(
        f"{a.base_url}/api/keys", headers=ADMIN, json={"scope": "read"}, timeout=30
    ).json()
    headers = {"authorization": f"Bearer {made['key']}"}

    def status_on_b() -> int:
        return httpx.get(f"{b.base_url}/api/runs", headers=headers, timeout=30).status_code

    until(lambda: status_on_b() == 200, 10, "the new key to work on the other node")
    r = httpx.delete(f"{a.base_url}/api/keys/{made['id']}", headers=ADMIN, timeout=30)
    assert r.status_code == 200
    started = time.monotonic()
    until(lambda: status_on_b() == 401, 10, "the revoked key to be refused on the other node")
    assert time.monotonic() - started < 10
    assert httpx.get(f"{b.base_url}/api/runs", headers=READ, timeout=30).status_code == 200


def test_the_run_consumers_holder_killed_an_alert_notifies_once(cluster: Cluster) -> None:
    with Receiver() as receiver:
        rule = {
            "org": "acme",
            "name": "Every triage run",
            "condition": "run_total_tokens",
            "threshold": 1,
            "workflows": ["support-triage"],
            "channels": [{"type": "webhook", "url": receiver.url("/hook"), "secret": "s" * 16}],
        }
        extra = (
            "outbound: {allow_private: true}\n"
            "alerts:\n  evaluation_interval_s: 1\n  cooldown_s: 0\n  retry_base_s: 1\n"
            f"  rules: [{json.dumps(rule)}]\n"
        )
        nodes = cluster.start(2, extra)
        assert post_spans(nodes[0], trace(1)) == 200
        until(lambda: len(receiver.requests) == 1 or None, 30, "the first notification")

        def recorded() -> bool:
            r = httpx.get(f"{nodes[1].base_url}/api/alert-events", headers=READ, timeout=10)
            return all(e["notification_sent"] for e in r.json()["alert_events"])

        # Delivery is at least once: a node killed between a send and its record would have
        # the next holder send again. Once recorded, a notification is never sent again.
        until(recorded, 30, "the first notification recorded as sent")
        victim = until(lambda: holder(nodes, "run-consumers"), 30, "a holder of run consumers")
        survivor = next(n for n in nodes if n is not victim)
        victim.kill()
        assert post_spans(survivor, trace(2)) == 200  # derived, alerted, notified elsewhere
        until(lambda: len(receiver.requests) == 2 or None, LEASE_S * 10, "the second notification")
        time.sleep(LEASE_S * 2)
        events = [json.loads(r.body)["alert_event"]["id"] for r in receiver.requests]
        assert len(set(events)) == len(events) == 2  # each alert notified once, across takeover
