"""The one durable outbox: messages queued in the caller's transaction, delivered after the commit
by one loop with bounded concurrency, retried with backoff, kept a while once finished.

Features queue rows with `queue(cur, ...)` and register a `Topic` that delivers theirs (alerts'
notifications, output evaluation's callbacks and notifications); rows live in the store's
`outbox` table; `collector/service.py` starts the loop and drains it on stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from collector.model import StoreUnavailable
from collector.outbound.client import OutboundFailed, OutboundRefused, retryable
from collector.store.lake import LAKE
from collector.store.writer import Store

log = logging.getLogger(__name__)

TABLE = f"{LAKE}.outbox"
DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
  org VARCHAR, id VARCHAR, topic VARCHAR, reference VARCHAR, kind VARCHAR, target JSON,
  payload JSON, status VARCHAR, attempts INTEGER, next_at TIMESTAMPTZ, created_at TIMESTAMPTZ,
  done_at TIMESTAMPTZ, last_error VARCHAR)"""
# status: pending → sent | failed; `suppressed` rows are recorded but never sent (a topic's
# choice, e.g. an alert rule's cool-down). `done_at` is set when a row leaves `pending`.
PENDING, SENT, FAILED, SUPPRESSED = "pending", "sent", "failed", "suppressed"

BATCH = 100  # rows read, sent and recorded per pass
CONCURRENCY = 8  # sends in flight
SEND_TIMEOUT_S = 300.0  # one send in total, a channel's own quick retries included
RECHECK_S = 5.0  # due rows nobody kicked for (another node's, a retry) are found this soon
# A commit looks for rows another node queued, at most this often: under load commits land
# several times a second, and each look is two store queries (most of them finding nothing).
COMMIT_GAP_S = 1.0
DRAIN_S = 10.0  # on stop, what is due is sent for at most this long; the rest stays pending
# Finished rows are kept this long (their last_error with them). Alert rules look back over
# their notifications for the cool-down, at most 7 days (processors/alerts/rules.py).
KEEP_DONE = timedelta(days=7)
PRUNE_EVERY_S = 3600.0
_NS = 1_000_000_000


@dataclass(frozen=True)
class Retry:
    """A topic's schedule: `attempts` tries in all; the wait after try n is `base_delay_s`
    doubled n-1 times, at most `max_delay_s`, ±20 % jitter, and at least the receiver's
    Retry-After (within `max_delay_s`)."""

    attempts: int
    base_delay_s: float
    max_delay_s: float

    def delay_s(self, tries: int, retry_after_s: float | None = None) -> float:
        delay = min(self.max_delay_s, self.base_delay_s * 2.0 ** min(tries - 1, 60))
        delay *= random.uniform(0.8, 1.2)  # spread retries of many rows that failed together
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_delay_s))
        return delay


@dataclass(frozen=True)
class Message:
    """One row as its topic sees it; `attempts` counts the tries made before this one."""

    org: str
    id: str
    topic: str
    reference: str  # what it is about: an alert event id, a log id
    kind: str  # which message: "alert.triggered", "log.evaluated", ...
    target: dict[str, Any]  # where it goes, in the topic's terms (never a secret)
    payload: Any
    attempts: int


class Undeliverable(Exception):
    """Raised by a topic for a message no retry can deliver (its rule or channel is gone, a
    secret does not open): the row fails at once. The message says why, without secrets."""


class Topic(Protocol):
    """How one feature's messages are delivered, and what their end changes."""

    @property
    def name(self) -> str:
        """The `topic` column of its rows; unique in an outbox."""
        ...

    @property
    def retry(self) -> Retry: ...

    async def deliver(self, message: Message) -> None:
        """Send one message; raise when it was not delivered (`Undeliverable`: for good;
        `OutboundFailed` and `OutboundRefused` are classified as the outbound client says;
        anything else is retried)."""
        ...

    def finished(self, cur: duckdb.DuckDBPyConnection, messages: Sequence[Message]) -> None:
        """In the transaction that records them: `messages` just ended (sent or failed).
        Idempotent: a message a racing deliverer recorded first may come again."""
        ...


def queue(
    cur: duckdb.DuckDBPyConnection,
    topic: str,
    *,
    org: str,
    reference: str,
    kind: str,
    target: Mapping[str, Any],
    payload: Any,
    now: datetime,
    suppressed: bool = False,
) -> str:
    """Add one message in the caller's transaction, due at once (or recorded as `suppressed`,
    never sent); returns its id. Kick the outbox after the commit to deliver it without wait."""
    oid = f"ob_{secrets.token_hex(12)}"
    cur.execute(
        f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, NULL)",
        [
            org, oid, topic, reference, kind, _json(target), _json(payload),
            SUPPRESSED if suppressed else PENDING, now, now, now if suppressed else None,
        ],
    )  # fmt: skip
    return oid


@dataclass(frozen=True)
class _Failure:
    reason: str  # secret-free: error type, HTTP status, host
    retryable: bool
    retry_after_s: float | None = None


class Outbox:
    """Delivers the due rows of registered topics. `run(stop)` is the delivery job (one loop a
    process; with several nodes, the job a lease holder runs); `start`/`stop` run it as a task.

    Every outcome of a pass is written in one transaction that also runs the topics' `finished`
    and only touches rows still pending at the attempt count read, so a row recorded twice (a
    second deliverer racing) is recorded once."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], int] = time.time_ns,
        batch: int = BATCH,
        concurrency: int = CONCURRENCY,
        send_timeout_s: float = SEND_TIMEOUT_S,
        recheck_s: float = RECHECK_S,
        commit_gap_s: float = COMMIT_GAP_S,
        keep_done: timedelta = KEEP_DONE,
    ) -> None:
        self._store = store
        self._clock = clock
        self._batch = batch
        self._concurrency = concurrency
        self._send_timeout_s = send_timeout_s
        self._recheck_s = recheck_s
        self._commit_gap_s = commit_gap_s
        self._keep_done = keep_done
        self._topics: dict[str, Topic] = {}
        self._kicked = False
        self._wake: asyncio.Event | None = None
        self._inflight: set[asyncio.Task[_Failure | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._aborted = False
        self.counts: Counter[tuple[str, str]] = Counter()
        """(topic, outcome) → tries ended so: sent, failed (given up) or retried."""
        self.passes = 0
        """Passes the loop has made."""
        self.pending = 0
        """Rows of registered topics waiting, as the loop last counted (after an idle pass)."""

    # -- set up --------------------------------------------------------------------------------

    def register(self, topic: Topic) -> None:
        if topic.name in self._topics:
            raise ValueError(f"outbox topic {topic.name!r} is registered twice")
        self._topics[topic.name] = topic

    def create_tables(self) -> None:
        """The `outbox` table, and the move of the two outboxes before it (blocking)."""
        before = _dt(self._clock()) - self._keep_done
        moved = self._store.call(lambda cur: prepare(cur, before))
        for table, n in moved.items():
            log.info("moved %d row(s) of %s into the outbox, and dropped %s", n, table, table)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stop = asyncio.Event()
        self._aborted = False
        self._task = asyncio.create_task(self.run(self._stop), name="outbox delivery")

    async def stop(self, drain_s: float = DRAIN_S) -> None:
        """Send what is due (queued before the stop included) for at most `drain_s`, then stop;
        sends still in flight are abandoned and their rows stay pending (sent again after a
        restart: delivery is at least once). Safe without start, and twice."""
        task, self._task = self._task, None
        if task is None:
            return
        assert self._stop is not None
        self._stop.set()
        timer = asyncio.get_running_loop().call_later(drain_s, self._abort)
        try:
            await task
        finally:
            timer.cancel()

    def _abort(self) -> None:
        self._aborted = True
        for task in list(self._inflight):
            task.cancel()

    def kick(self) -> None:
        """Rows were committed: deliver them now rather than at the next re-check (event loop)."""
        self._kicked = True
        if self._wake is not None:
            self._wake.set()

    # -- the delivery job ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then once more (what was queued before it), passes back
        to back while a batch comes full, else after a kick, when the next retry is due, or
        every `recheck_s`; prune finished rows every hour."""
        self._wake = asyncio.Event()
        # Rows another node queued arrive with its commit (on a shared store): look then, but
        # at most once per `commit_gap_s`.
        commits = self._store.commits.event()
        prune_at = time.monotonic()  # after the first pass, then hourly
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            final = stop.is_set()
            self._kicked = False
            self._wake.clear()
            commits.clear()
            more, wait_s = await self._pass()
            self.passes += 1
            if self._aborted or (final and not more):
                return
            if time.monotonic() >= prune_at:
                prune_at = time.monotonic() + PRUNE_EVERY_S
                await self._prune()
            if more or self._kicked or stop.is_set():
                continue
            await self._wait(wait_s, stop, commits)
            rest = began + self._commit_gap_s - loop.time()
            if rest > 0 and not (self._wake.is_set() or stop.is_set()):
                await self._wait(rest, stop)  # woken by a commit (or a due row) within the gap

    async def _wait(self, seconds: float, stop: asyncio.Event, *more: asyncio.Event) -> None:
        """Until a kick, `stop` or one of `more` is set, or `seconds` pass."""
        assert self._wake is not None
        waits = [asyncio.ensure_future(e.wait()) for e in (self._wake, stop, *more)]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _pass(self) -> tuple[bool, float]:
        """One pass, its failure logged: (more due at once, seconds until the next look)."""
        try:
            more = await self.deliver_due()
            return more, 0.0 if more else await asyncio.to_thread(self._next_wait)
        except (StoreUnavailable, duckdb.ConnectionException):
            log.info("outbox delivery paused: the store is closed or unavailable")
        except Exception:
            log.exception("outbox delivery pass failed; trying again in %gs", self._recheck_s)
        return False, self._recheck_s

    async def _prune(self) -> None:
        try:
            await self.prune(_dt(self._clock()) - self._keep_done)
        except Exception:
            log.exception("outbox pruning failed; trying again in an hour")

    async def drain(self) -> None:
        """Deliver every row due now, passes back to back, waiting for them (tests; the loop
        must not be running)."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("drain() while the delivery loop runs")
        while await self.deliver_due():
            pass

    async def prune(self, before: datetime) -> int:
        """Forget rows finished (sent, failed, suppressed) before `before`; how many."""

        def delete(cur: duckdb.DuckDBPyConnection) -> int:
            found = cur.execute(
                f"DELETE FROM {TABLE} WHERE status <> '{PENDING}' AND done_at < ?", [before]
            ).fetchone()
            return int(found[0]) if found else 0

        return await self._store.acall(delete)

    # -- one pass ------------------------------------------------------------------------------

    async def deliver_due(self) -> bool:
        """Send the due rows of registered topics (at most a batch) and record how each went;
        True when the batch came full (more may be due)."""
        if not self._topics:
            return False
        rows = await asyncio.to_thread(
            self._store.query,
            f"""SELECT org, id, topic, reference, kind, target, payload, attempts FROM {TABLE}
                WHERE status = '{PENDING}' AND next_at <= ? AND list_contains(?, topic)
                ORDER BY next_at, created_at, id LIMIT {self._batch}""",
            [_dt(self._clock()), list(self._topics)],
        )
        messages = [
            Message(r[0], r[1], r[2], r[3], r[4], _loads(r[5]) or {}, _loads(r[6]), int(r[7]))
            for r in rows
        ]
        gate = asyncio.Semaphore(self._concurrency)
        tasks = [asyncio.create_task(self._attempt(m, gate)) for m in messages]
        self._inflight.update(tasks)
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._inflight.difference_update(tasks)
        # A send cut short by the stop is no try: its row stays as it was.
        tried = [(m, r) for m, r in zip(messages, results, strict=True)
                 if not isinstance(r, BaseException)]  # fmt: skip
        if tried:
            await self._store.acall(lambda cur: self._record(cur, tried, self._clock()))
        return len(rows) == self._batch

    async def _attempt(self, message: Message, gate: asyncio.Semaphore) -> _Failure | None:
        topic = self._topics[message.topic]
        async with gate:
            try:
                async with asyncio.timeout(self._send_timeout_s):
                    await topic.deliver(message)
            except TimeoutError:
                return _Failure(f"no answer within {self._send_timeout_s:g}s", True)
            except Exception as e:
                return _classify(e)
        return None

    def _record(
        self,
        cur: duckdb.DuckDBPyConnection,
        tried: list[tuple[Message, _Failure | None]],
        now_ns: int,
    ) -> None:
        now = _dt(now_ns)
        rows: list[dict[str, Any]] = []
        ended: dict[str, list[Message]] = {}
        for message, failure in tried:
            tries = message.attempts + 1
            topic = self._topics[message.topic]
            status, next_at, error = SENT, None, None
            if failure is not None:
                error = failure.reason[:300]
                final = not failure.retryable or tries >= topic.retry.attempts
                if final:
                    status = FAILED
                else:
                    status = PENDING
                    delay = topic.retry.delay_s(tries, failure.retry_after_s)
                    next_at = _dt(now_ns + int(delay * _NS))
                log.warning(
                    "outbox: %s %s %s failed (try %d of %d): %s%s",
                    message.topic, message.kind, message.id, tries, topic.retry.attempts,
                    error, "; given up" if final else "",
                )  # fmt: skip
            self.counts[(message.topic, "retried" if status == PENDING else status)] += 1
            if status != PENDING:
                ended.setdefault(message.topic, []).append(message)
            rows.append({
                "org": message.org, "id": message.id, "tried": message.attempts,
                "status": status, "attempts": tries, "next_at": next_at,
                "done_at": None if status == PENDING else now, "last_error": error,
            })  # fmt: skip
        cur.register("_outcomes", pa.Table.from_pylist(rows, _OUTCOMES))
        try:
            cur.execute(
                f"""UPDATE {TABLE} AS o SET status = d.status, attempts = d.attempts,
                        next_at = coalesce(d.next_at, o.next_at), done_at = d.done_at,
                        last_error = d.last_error
                    FROM _outcomes d WHERE o.org = d.org AND o.id = d.id
                      AND o.status = '{PENDING}' AND o.attempts = d.tried"""
            )
        finally:
            cur.unregister("_outcomes")
        for name, messages in ended.items():
            self._topics[name].finished(cur, messages)

    def _next_wait(self) -> float:
        """Seconds until the soonest pending row of a registered topic is due, at most
        `recheck_s` (blocking)."""
        rows = self._store.query(
            f"SELECT count(*), min(epoch_ns(next_at)) FROM {TABLE} "
            f"WHERE status = '{PENDING}' AND list_contains(?, topic)",
            [list(self._topics)],
        )
        self.pending, soonest = (int(rows[0][0]), rows[0][1]) if rows else (0, None)
        if soonest is None:
            return self._recheck_s
        return min(self._recheck_s, max(0.0, (int(soonest) - self._clock()) / _NS))

    # -- what /metrics shows -------------------------------------------------------------------

    def metric_lines(self) -> list[str]:
        name = "agentledger_outbox_tries_total"
        lines = [
            "# HELP agentledger_outbox_pending outbox rows waiting (last counted)",
            "# TYPE agentledger_outbox_pending gauge",
            f"agentledger_outbox_pending {self.pending}",
            f"# HELP {name} outbox delivery tries, by topic and outcome (sent, retried, failed)",
            f"# TYPE {name} counter",
        ]
        for (topic, outcome), n in sorted(self.counts.items()):
            lines.append(f'{name}{{topic="{topic}",outcome="{outcome}"}} {n}')
        return lines


def _classify(e: Exception) -> _Failure:
    if isinstance(e, Undeliverable | OutboundRefused):
        return _Failure(str(e), False)
    if isinstance(e, OutboundFailed):  # its message names the host only, never a path
        return _Failure(str(e), retryable(e), e.retry_after_s)
    # The type and status only: a message may quote a secret URL.
    status = getattr(e, "status", None)
    return _Failure(type(e).__name__ + (f" (HTTP {status})" if status else ""), True)


_OUTCOMES = pa.schema([
    ("org", pa.string()), ("id", pa.string()), ("tried", pa.int32()), ("status", pa.string()),
    ("attempts", pa.int32()), ("next_at", pa.timestamp("us", tz="UTC")),
    ("done_at", pa.timestamp("us", tz="UTC")), ("last_error", pa.string()),
])  # fmt: skip


# -- the two outboxes this one replaces --------------------------------------------------------

# Each old table's rows as `outbox` rows: pending ones, and finished ones still within the keep
# period (alerts' cool-down reads them). `?` is the oldest finish time kept.
LEGACY = {
    "alert_outbox": f"""
        SELECT org, note_id, 'alerts', event_id, kind,
               json_object('rule_id', rule_id, 'channel', channel), note, status, attempts,
               next_attempt_at, created_at,
               CASE WHEN status = '{PENDING}' THEN NULL ELSE coalesce(sent_at, created_at) END,
               last_error
        FROM {LAKE}.alert_outbox
        WHERE status = '{PENDING}' OR coalesce(sent_at, created_at) >= ?""",
    "eval_outbox": f"""
        SELECT org, id, 'evals', log_id,
               coalesce(json_extract_string(payload, '$.event'), 'log.evaluated'),
               CASE WHEN url IS NULL THEN json_object('channel', kind)
                    ELSE json_object('channel', kind, 'url', url) END,
               payload,
               CASE WHEN done_at IS NULL THEN '{PENDING}'
                    WHEN last_error IS NULL THEN '{SENT}' ELSE '{FAILED}' END,
               attempts, next_at, created_at, done_at, last_error
        FROM {LAKE}.eval_outbox
        WHERE done_at IS NULL OR done_at >= ?""",
}


def prepare(cur: duckdb.DuckDBPyConnection, keep_since: datetime) -> dict[str, int]:
    """Create `outbox`; move the rows of `alert_outbox` and `eval_outbox` (the per-feature
    outboxes before it) into it and drop them, in the caller's one transaction, so nothing
    queued before an upgrade is lost. Returns the rows moved per old table."""
    cur.execute(DDL)
    present = {
        str(r[0])
        for r in cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
            "AND list_contains(?, table_name)",
            [LAKE, list(LEGACY)],
        ).fetchall()
    }
    moved: dict[str, int] = {}
    for table, select in LEGACY.items():
        if table not in present:
            continue
        found = cur.execute(f"INSERT INTO {TABLE} {select}", [keep_since]).fetchone()
        moved[table] = int(found[0]) if found else 0
        cur.execute(f"DROP TABLE {LAKE}.{table}")
    return moved


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _loads(text: Any) -> Any:
    return None if text is None else json.loads(text)


def _dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1000 / 1e6, UTC).replace(microsecond=ns // 1000 % 10**6)
