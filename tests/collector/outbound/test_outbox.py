"""Tests for the one durable outbox (`collector/outbound/outbox.py`) over a real DuckLake store:
the backoff schedule, permanent and retryable errors, a restart with pending rows, two topics,
pruning, the loop's wake-ups and its drain on stop, and the move of the two old outbox tables.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from collector.evals.callbacks import Callbacks
from collector.evals.config import EvalsConfig
from collector.outbound.client import OutboundFailed, OutboundRefused
from collector.outbound.config import OutboundPolicy
from collector.outbound.outbox import Message, Outbox, Retry, Undeliverable, queue
from collector.store.lake import StoreSettings
from collector.store.writer import Store
from tests.fixtures.receiver import Receiver

S = 1_000_000_000
THREE_TRIES = Retry(attempts=3, base_delay_s=10.0, max_delay_s=60.0)


class Clock:
    """A clock the test moves (due times, retries, pruning)."""

    def __init__(self) -> None:
        self.ns = int(datetime(2030, 1, 1, tzinfo=UTC).timestamp()) * S

    def __call__(self) -> int:
        return self.ns

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.ns / S, UTC)


class RealClock(Clock):
    """The wall clock, for tests of the running loop."""

    def __call__(self) -> int:
        return time.time_ns()

    @property
    def now(self) -> datetime:
        return datetime.now(UTC)


class Topic:
    """A receiver on the far side of a topic: records what it gets, fails as told."""

    def __init__(
        self,
        name: str = "t",
        retry: Retry = THREE_TRIES,
        fail: Callable[[Message], Exception | None] = lambda m: None,
        delay_s: float = 0.0,
    ) -> None:
        self.name = name
        self.retry = retry
        self.fail = fail
        self.delay_s = delay_s
        self.sent: list[Message] = []
        self.ended: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def deliver(self, message: Message) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            error = self.fail(message)
            if error is not None:
                raise error
            self.sent.append(message)
        finally:
            self.in_flight -= 1

    def finished(self, cur: duckdb.DuckDBPyConnection, messages: Sequence[Message]) -> None:
        self.ended += [m.id for m in messages]


def open_store(tmp_path: Path) -> Store:
    settings = StoreSettings(catalog=str(tmp_path / "c.ducklake"), data_path=str(tmp_path / "d"))
    store = Store(settings)
    store.open()
    return store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path)
    try:
        yield s
    finally:
        s.close()


def outbox_for(store: Store, clock: Clock, *topics: Topic, **kw: Any) -> Outbox:
    box = Outbox(store, clock=clock, **kw)
    box.create_tables()
    for topic in topics:
        box.register(topic)
    return box


def put(store: Store, clock: Clock, topic: str = "t", n: int = 1, **kw: Any) -> list[str]:
    def write(cur: duckdb.DuckDBPyConnection) -> list[str]:
        return [
            queue(cur, topic, org="acme", reference=f"r{i}", kind="k", target={"to": i},
                  payload={"n": i}, now=clock.now, **kw)
            for i in range(n)
        ]  # fmt: skip

    return store.call(write)


def rows(store: Store) -> dict[str, tuple[Any, ...]]:
    """id → (status, attempts, next_at ns, done_at, last_error)."""
    found = store.query(
        "SELECT id, status, attempts, epoch_ns(next_at), done_at, last_error FROM outbox"
    )
    return {r[0]: r[1:] for r in found}


def test_the_backoff_schedule_doubles_with_jitter_up_to_the_cap() -> None:
    retry = Retry(attempts=8, base_delay_s=10, max_delay_s=60)
    for tries, nominal in [(1, 10), (2, 20), (3, 40), (4, 60), (7, 60)]:
        delays = [retry.delay_s(tries) for _ in range(200)]
        assert all(0.8 * nominal <= d <= 1.2 * nominal for d in delays)
        assert max(delays) - min(delays) > 0.1 * nominal  # spread, not one value
    assert retry.delay_s(1, retry_after_s=45) >= 45  # the receiver's Retry-After is honoured...
    assert retry.delay_s(1, retry_after_s=3600) <= 72  # ...within the cap (and its jitter)
    assert Retry(100, 1, 900).delay_s(100) <= 1080  # no overflow on a long schedule


def test_a_failing_row_is_retried_on_schedule_then_given_up(store: Store) -> None:
    clock = Clock()
    topic = Topic(retry=Retry(3, 10, 15), fail=lambda m: ConnectionError("down"))
    box = outbox_for(store, clock, topic)
    (oid,) = put(store, clock)
    asyncio.run(box.drain())
    status, attempts, next_ns, done, error = rows(store)[oid]
    assert (status, attempts, done, error) == ("pending", 1, None, "ConnectionError")
    assert clock.ns + 8 * S <= next_ns <= clock.ns + 12 * S
    asyncio.run(box.drain())  # not due yet: nothing is tried
    assert rows(store)[oid][1] == 1
    clock.ns = next_ns
    asyncio.run(box.drain())
    status, attempts, next_ns2, _, _ = rows(store)[oid]
    assert (status, attempts) == ("pending", 2)
    assert clock.ns + 12 * S <= next_ns2 <= clock.ns + 18 * S  # 20 s capped at 15, ±20 %
    clock.ns = next_ns2
    asyncio.run(box.drain())
    status, attempts, _, done, error = rows(store)[oid]
    assert (status, attempts, error) == ("failed", 3, "ConnectionError") and done is not None
    assert topic.ended == [oid] and topic.sent == []
    assert box.counts == {("t", "retried"): 2, ("t", "failed"): 1}


@pytest.mark.parametrize(
    ("error", "retried", "reason"),
    [
        (Undeliverable("the rule was removed"), False, "the rule was removed"),
        (OutboundRefused("refused: loopback address"), False, "refused: loopback address"),
        (OutboundFailed("http://h answered 404", 404), False, "http://h answered 404"),
        (OutboundFailed("http://h answered 503", 503), True, "http://h answered 503"),
        (OutboundFailed("smtp: 550 no such user", permanent=True), False, "smtp: 550 no such user"),
        # Other errors keep their type only: a message may quote a secret URL.
        (ValueError("https://hooks.example/T0/secret-path"), True, "ValueError"),
    ],
)
def test_permanent_errors_end_a_row_at_once_others_are_retried(
    store: Store, error: Exception, retried: bool, reason: str
) -> None:
    clock = Clock()
    box = outbox_for(store, clock, Topic(fail=lambda m: error))
    (oid,) = put(store, clock)
    asyncio.run(box.drain())
    status, attempts, _, done, last_error = rows(store)[oid]
    assert status == ("pending" if retried else "failed") and attempts == 1
    assert (done is None) == retried and last_error == reason


def test_retry_after_and_the_send_timeout(store: Store) -> None:
    clock = Clock()
    busy = Topic("busy", fail=lambda m: OutboundFailed("http://h answered 429", 429, 30.0))
    slow = Topic("slow", delay_s=5)
    box = outbox_for(store, clock, busy, slow, send_timeout_s=0.2)
    (b,) = put(store, clock, "busy")
    (s,) = put(store, clock, "slow")
    asyncio.run(box.drain())
    found = rows(store)
    assert found[b][2] >= clock.ns + 30 * S  # Retry-After: 30 over a 10 s base
    assert found[s][:2] == ("pending", 1) and found[s][4] == "no answer within 0.2s"


def test_sends_are_bounded_in_flight_and_batched(store: Store) -> None:
    clock = Clock()
    topic = Topic(delay_s=0.05)
    box = outbox_for(store, clock, topic, batch=10, concurrency=3)
    put(store, clock, n=25)
    assert asyncio.run(box.deliver_due()) is True  # a full batch: more may be due
    assert len(topic.sent) == 10
    asyncio.run(box.drain())
    assert len(topic.sent) == 25 and topic.most_in_flight == 3
    assert {r[0] for r in rows(store).values()} == {"sent"}


def test_a_racing_second_deliverer_does_not_undo_a_delivery(store: Store) -> None:
    """Two processes delivering at once (before leases) may both send; the row records the
    first outcome: a late failure of the other does not put a sent row back to pending."""
    clock = Clock()
    quick = Topic()
    late = Topic(fail=lambda m: ConnectionError("down"), delay_s=0.5)
    a, b = outbox_for(store, clock, quick), outbox_for(store, clock, late)
    (oid,) = put(store, clock)

    async def race() -> None:
        await asyncio.gather(a.deliver_due(), b.deliver_due())

    asyncio.run(race())
    assert len(quick.sent) == 1 and late.ended == []
    status, attempts, _, _, error = rows(store)[oid]
    assert (status, attempts, error) == ("sent", 1, None)


def test_a_restart_delivers_rows_left_pending(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path)
    try:
        down = Topic(fail=lambda m: ConnectionError("down"))
        box = outbox_for(store, clock, down)
        first = put(store, clock, n=2)
        asyncio.run(box.drain())  # both tried once, failed, waiting
        later = put(store, clock, n=1)  # queued, never tried: the process stops
    finally:
        store.close()
    clock.ns += 60 * S
    store = open_store(tmp_path)
    try:
        up = Topic()
        box = outbox_for(store, clock, up)
        asyncio.run(box.drain())
        assert sorted(m.id for m in up.sent) == sorted(first + later)
        assert sorted(m.attempts for m in up.sent) == [0, 1, 1]  # tries before survive
        assert {r[:2] for r in rows(store).values()} == {("sent", 2), ("sent", 1)}
        assert up.sent[0].payload == {"n": up.sent[0].target["to"]}
    finally:
        store.close()


def test_two_topics_each_deliver_and_finish_their_own(store: Store) -> None:
    clock = Clock()
    alerts, evals = Topic("alerts"), Topic("evals", fail=lambda m: Undeliverable("gone"))
    box = outbox_for(store, clock, alerts, evals)
    a = put(store, clock, "alerts", n=2)
    e = put(store, clock, "evals", n=1)
    (other,) = put(store, clock, "future")  # a topic this process does not deliver
    muted = put(store, clock, "alerts", n=1, suppressed=True)  # recorded, never sent
    asyncio.run(box.drain())
    assert sorted(m.id for m in alerts.sent) == sorted(a) and evals.sent == []
    assert sorted(alerts.ended) == sorted(a) and evals.ended == e
    found = rows(store)
    assert found[e[0]][0] == "failed" and found[other][:2] == ("pending", 0)
    assert found[muted[0]][0] == "suppressed" and found[muted[0]][3] is not None
    with pytest.raises(ValueError, match="registered twice"):
        box.register(Topic("alerts"))


def test_finished_rows_are_pruned_after_the_keep_period(store: Store) -> None:
    clock = Clock()
    box = outbox_for(store, clock, Topic(), keep_done=timedelta(days=7))
    old = put(store, clock, n=2)
    asyncio.run(box.drain())  # sent now...
    clock.ns += 8 * 86400 * S  # ...eight days ago
    waiting = put(store, clock, "elsewhere", n=1)  # pending: never pruned, however old
    recent = put(store, clock, n=1)
    asyncio.run(box.drain())
    clock.ns += 8 * 86400 * S
    assert asyncio.run(box.prune(clock.now - timedelta(days=7))) == 3
    assert set(rows(store)) == set(waiting)
    del old, recent


def test_the_loop_wakes_on_a_kick_and_drains_on_stop(store: Store) -> None:
    topic = Topic()
    box = Outbox(store, recheck_s=60)  # the real clock; re-checks far away
    box.create_tables()
    box.register(topic)

    async def scenario() -> None:
        await box.start()
        while not box.passes:  # its first pass, which finds nothing
            await asyncio.sleep(0.01)
        await asyncio.to_thread(put, store, RealClock(), "t", 1)
        box.kick()
        for _ in range(100):
            if topic.sent:
                break
            await asyncio.sleep(0.02)
        assert len(topic.sent) == 1  # at once, not after a minute
        await asyncio.to_thread(put, store, RealClock(), "t", 2)  # no kick: found by the stop
        await box.stop()
        await box.stop()  # safe twice

    asyncio.run(scenario())
    assert len(topic.sent) == 3
    assert {r[0] for r in rows(store).values()} == {"sent"}
    assert 'agentledger_outbox_tries_total{topic="t",outcome="sent"} 3' in box.metric_lines()


def test_commits_wake_the_loop_at_most_once_a_gap_and_still_find_other_nodes_rows(
    store: Store,
) -> None:
    topic = Topic()
    box = Outbox(store, recheck_s=60, commit_gap_s=0.5)
    box.create_tables()
    box.register(topic)

    async def scenario() -> float:
        await box.start()
        while not box.passes:
            await asyncio.sleep(0.01)
        began, passes = time.monotonic(), box.passes
        for _ in range(20):  # commits nobody kicked for: rows of a topic this node does not send
            await asyncio.to_thread(put, store, RealClock(), "elsewhere", 1)
            await asyncio.sleep(0.03)
        took = time.monotonic() - began
        woken = box.passes - passes
        # As another node's row arrives: with its commit, no kick.
        await asyncio.to_thread(put, store, RealClock(), "t", 1)
        for _ in range(100):
            if topic.sent:
                break
            await asyncio.sleep(0.02)
        await box.stop()
        assert woken <= 1 + took / 0.5  # 20 passes, one a commit, without the gap
        return took

    asyncio.run(scenario())
    assert len(topic.sent) == 1  # found by its commit within the gap, not the minute's re-check


def test_a_stop_abandons_sends_past_the_drain_budget(store: Store) -> None:
    hung = Topic(delay_s=30)
    box = Outbox(store, recheck_s=60)
    box.create_tables()
    box.register(hung)

    async def scenario() -> None:
        await asyncio.to_thread(put, store, RealClock(), "t", 1)
        await box.start()
        await asyncio.sleep(0.3)  # the send is in flight
        await asyncio.wait_for(box.stop(drain_s=0.2), 5)

    asyncio.run(scenario())
    ((status, attempts, _, done, error),) = rows(store).values()
    assert (status, attempts, done, error) == ("pending", 0, None, None)  # sent again later
    assert "agentledger_outbox_pending 1" in box.metric_lines()


def test_stop_without_start_is_safe(store: Store) -> None:
    asyncio.run(Outbox(store).stop())


# -- the move of the two outboxes before this one ----------------------------------------------

OLD_ALERTS = """CREATE TABLE alert_outbox (org VARCHAR, note_id VARCHAR, event_id VARCHAR,
  rule_id VARCHAR, kind VARCHAR, channel INTEGER, note JSON, status VARCHAR, attempts INTEGER,
  next_attempt_at TIMESTAMPTZ, last_error VARCHAR, created_at TIMESTAMPTZ, sent_at TIMESTAMPTZ)"""
OLD_EVALS = """CREATE TABLE eval_outbox (org VARCHAR, id VARCHAR, log_id VARCHAR, kind VARCHAR,
  url VARCHAR, payload JSON, attempts INTEGER, next_at TIMESTAMPTZ, created_at TIMESTAMPTZ,
  done_at TIMESTAMPTZ, last_error VARCHAR)"""


def old_store(store: Store, now: datetime, callback_url: str) -> None:
    """Tables and rows as the collector left them before the one outbox."""
    long_ago = now - timedelta(days=30)
    note = json.dumps({"kind": "alert.triggered", "title": "t", "text": "", "fields": {},
                       "payload": {}})  # fmt: skip
    event = json.dumps({"event": "log.evaluated", "id": "l1", "status": "flagged"})

    def write(cur: duckdb.DuckDBPyConnection) -> None:
        cur.execute(OLD_ALERTS)
        cur.execute(OLD_EVALS)
        alert = "INSERT INTO alert_outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        cur.execute(alert, ["acme", "an_1", "ae_1", "ar_1", "alert.triggered", 1, note,
                            "pending", 2, now, "ConnectionError", now, None])  # fmt: skip
        cur.execute(alert, ["acme", "an_2", "ae_0", "ar_1", "alert.triggered", 0, note,
                            "sent", 1, now, None, now, now])  # fmt: skip
        cur.execute(alert, ["acme", "an_3", "ae_x", "ar_1", "alert.triggered", 0, note,
                            "sent", 1, long_ago, None, long_ago, long_ago])  # fmt: skip
        evals = "INSERT INTO eval_outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        cur.execute(evals, ["acme", "e1", "l1", "callback", callback_url, event, 0, now, now,
                            None, None])  # fmt: skip
        cur.execute(evals, ["acme", "e2", "l1", "slack", None, event, 1, now, now, None,
                            "OutboundFailed: http://h answered 503"])  # fmt: skip
        cur.execute(evals, ["acme", "e3", "l1", "webhook", None, event, 3, now, now, now,
                            "refused: loopback"])  # fmt: skip

    store.call(write)


def test_pending_rows_of_both_old_outboxes_move_and_are_delivered(tmp_path: Path) -> None:
    clock = RealClock()
    with Receiver() as hook:
        store = open_store(tmp_path)
        try:
            old_store(store, clock.now, hook.url("/cb"))
        finally:
            store.close()
        store = open_store(tmp_path)  # the upgraded collector starts on that store
        try:
            box = Outbox(store, clock=clock)
            box.create_tables()
            box.create_tables()  # a second start moves nothing twice
            tables = {r[0] for r in store.query("SELECT table_name FROM duckdb_tables()")}
            assert "alert_outbox" not in tables and "eval_outbox" not in tables
            found = store.query(
                "SELECT id, topic, reference, kind, target, status, attempts, done_at IS NULL, "
                "last_error FROM outbox ORDER BY id"
            )
            moved = {r[0]: (*r[1:4], json.loads(r[4]), *r[5:]) for r in found}
            assert moved == {
                "an_1": (
                    "alerts",
                    "ae_1",
                    "alert.triggered",
                    {"rule_id": "ar_1", "channel": 1},
                    "pending",
                    2,
                    True,
                    "ConnectionError",
                ),
                "an_2": (
                    "alerts",
                    "ae_0",
                    "alert.triggered",
                    {"rule_id": "ar_1", "channel": 0},
                    "sent",
                    1,
                    False,
                    None,
                ),  # kept: the rule's cool-down looks back on it
                "e1": (
                    "evals",
                    "l1",
                    "log.evaluated",
                    {"channel": "callback", "url": hook.url("/cb")},
                    "pending",
                    0,
                    True,
                    None,
                ),
                "e2": (
                    "evals",
                    "l1",
                    "log.evaluated",
                    {"channel": "slack"},
                    "pending",
                    1,
                    True,
                    "OutboundFailed: http://h answered 503",
                ),
                "e3": (
                    "evals",
                    "l1",
                    "log.evaluated",
                    {"channel": "webhook"},
                    "failed",
                    3,
                    False,
                    "refused: loopback",
                ),
            }  # fmt: skip  (an_3 finished a month ago: past the keep period, not moved)

            async def secrets(org: str) -> tuple[dict[str, Any], dict[str, str]]:
                return {}, {"callbackSecret": "whsec_test"}

            policy = OutboundPolicy(allow_private=True, timeout_s=5)
            box.register(Callbacks(policy, secrets, None, EvalsConfig()))
            asyncio.run(box.drain())
            (request,) = hook.requests  # the callback queued before the upgrade
            assert request.path == "/cb" and json.loads(request.body)["id"] == "l1"
            status = dict(store.query("SELECT id, status FROM outbox WHERE topic = 'evals'"))
            assert status == {"e1": "sent", "e2": "failed", "e3": "failed"}  # no Slack now
        finally:
            store.close()
