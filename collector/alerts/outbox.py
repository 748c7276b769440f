"""The alert notification outbox: rows queued with their event, delivered after the commit,
retried with backoff, and `notification_sent` set once every channel has delivered.

`collector/alerts/consumer.py` queues rows in its transaction and kicks delivery after each step;
channels are reached through the `send` callable the registry builds (`exporters/notify.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import duckdb

from collector.alerts import store as st
from collector.alerts.config import AlertsConfig
from collector.model import StoreUnavailable
from collector.secretbox import SecretBox
from collector.store.lake import LAKE
from collector.store.writer import Store

log = logging.getLogger(__name__)
Sender = Callable[[Mapping[str, Any], Mapping[str, Any]], Awaitable[None]]
"""`send(channel_spec, note)`: deliver one notification (kind, title, text, fields, payload)
to one channel (`{"type": "slack" | "webhook" | "email", ...}`); raises when it failed."""

BATCH = 100
CONCURRENCY = 8
SEND_TIMEOUT_S = 300.0  # a channel's own retries included
IDLE_RECHECK_S = 60.0  # look for due rows this often even without a local cause (other nodes)
_NS = 1_000_000_000
PERMANENT = ("the rule", "a channel secret")  # errors no retry can mend


class Outbox:
    def __init__(
        self,
        store: Store,
        config: AlertsConfig,
        send: Sender | None,
        clock: Callable[[], int] = time.time_ns,
        box: SecretBox | None = None,
    ) -> None:
        self._store = store
        self._box = box
        self._config = config
        self._send = send
        self._clock = clock
        self._wake_ns = 0  # check at once after a start: rows may be waiting from before
        self._queued = 0
        self._task: asyncio.Task[None] | None = None

    def queue(
        self,
        cur: duckdb.DuckDBPyConnection,
        event: tuple[str, str, str],
        note: Mapping[str, Any],
        *,
        channels: int,
        now: Any,
        status: str,
    ) -> None:
        """One row per channel for `event` (org, event_id, rule_id), in the caller's
        transaction."""
        org, event_id, rule_id = event
        body = json.dumps(note, separators=(",", ":"), default=str)
        sql = (
            f"INSERT INTO {LAKE}.alert_outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, NULL, ?, NULL)"
        )
        for i in range(channels):
            cur.execute(
                sql,
                [org, st.new_id("an"), event_id, rule_id, note["kind"], i, body, status, now, now],
            )
        if status == "pending":
            self._wake_ns = 0
            self._queued += 1  # before the commit: a pass running now must not miss it

    async def kick(self) -> None:
        """Start a delivery pass in the background when one is due and none is running."""
        if self._send is None or (self._task is not None and not self._task.done()):
            return
        if self._clock() < self._wake_ns:
            return
        self._task = asyncio.create_task(self._pass())

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Deliver everything due now, waiting for it (tests and shutdown)."""
        self._wake_ns = 0
        await self.kick()
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)

    async def _pass(self) -> None:
        try:
            await self._deliver_due()
        except (StoreUnavailable, duckdb.ConnectionException):
            log.info("alert notification delivery paused: the store is closed or unavailable")
            self._wake_ns = self._clock() + int(self._config.retry_base_s * _NS)
        except Exception:
            if not store_closed(self._store):
                log.exception("alert notification delivery failed; retrying later")
            self._wake_ns = self._clock() + int(self._config.retry_base_s * _NS)

    async def _deliver_due(self) -> None:
        assert self._send is not None
        queued = self._queued
        now_ns = self._clock()
        rows = await asyncio.to_thread(
            self._store.query,
            f"""SELECT o.org, o.note_id, o.event_id, o.rule_id, o.channel, o.note, o.attempts
                FROM {LAKE}.alert_outbox o
                WHERE o.status = 'pending' AND o.next_attempt_at <= ?
                ORDER BY o.created_at, o.note_id LIMIT {BATCH}""",
            [st.to_dt(now_ns)],
        )
        specs = await asyncio.to_thread(self._channel_specs, {(r[0], r[3]) for r in rows})
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(row: tuple[Any, ...]) -> tuple[tuple[Any, ...], str | None]:
            org, note_id, _event, rule_id, channel = row[:5]
            spec = specs.get((org, rule_id))
            if isinstance(spec, str):
                return row, spec
            if spec is None or channel >= len(spec):
                return row, "the rule or its channel was removed"
            async with gate:
                try:
                    assert self._send is not None
                    await asyncio.wait_for(self._send(spec[channel], json.loads(row[5])),
                                           SEND_TIMEOUT_S)  # fmt: skip
                except Exception as e:
                    # The type and status only: a message may quote a secret webhook URL.
                    status = getattr(e, "status", None)
                    reason = type(e).__name__ + (f" (HTTP {status})" if status else "")
                    log.warning(
                        "alert notification %s (rule %s, channel %d, attempt %d) failed: %s",
                        note_id, rule_id, channel, row[6] + 1, reason,
                    )  # fmt: skip
                    return row, reason
            return row, None

        results = await asyncio.gather(*(one(r) for r in rows))
        if results:
            await self._store.acall(lambda cur: self._record(cur, results, self._clock()))
        pending = await asyncio.to_thread(
            self._store.query,
            f"SELECT min(epoch_ns(next_attempt_at)) FROM {LAKE}.alert_outbox "
            "WHERE status = 'pending'",
        )
        soonest = pending[0][0] if pending and pending[0][0] is not None else None
        recheck = self._clock() + int(IDLE_RECHECK_S * _NS)
        self._wake_ns = recheck if soonest is None else min(int(soonest), recheck)
        if len(rows) == BATCH or self._queued != queued:
            self._wake_ns = 0  # more waiting, or rows queued while this pass ran

    def _channel_specs(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], list[Any] | str]:
        """Each rule's plaintext channels, or why they cannot be had."""
        out: dict[tuple[str, str], list[Any] | str] = {}
        cur = self._store.cursor()
        try:
            for org, rule_id in keys:
                rule = st.get_rule(cur, org, rule_id)
                if rule is None:
                    continue
                try:
                    spec = st.unseal_channels(rule.spec, self._box)
                except ValueError:
                    out[(org, rule_id)] = "a channel secret does not open (secrets.key changed?)"
                    continue
                out[(org, rule_id)] = list(spec.get("channels") or [])
        finally:
            cur.close()
        return out

    def _record(
        self,
        cur: duckdb.DuckDBPyConnection,
        results: list[tuple[tuple[Any, ...], str | None]],
        now_ns: int,
    ) -> None:
        now = st.to_dt(now_ns)
        events: set[str] = set()
        for row, error in results:
            note_id, event_id, attempts = row[1], row[2], int(row[6]) + 1
            events.add(event_id)
            if error is None:
                cur.execute(
                    f"""UPDATE {LAKE}.alert_outbox SET status = 'sent', attempts = ?, sent_at = ?,
                        last_error = NULL WHERE note_id = ?""",
                    [attempts, now, note_id],
                )
                continue
            final = attempts >= self._config.max_attempts or error.startswith(PERMANENT)
            delay = min(self._config.retry_base_s * 2 ** (attempts - 1), self._config.retry_max_s)
            retry_at = st.to_dt(now_ns + int(delay * random.uniform(0.8, 1.2) * _NS))
            cur.execute(
                f"""UPDATE {LAKE}.alert_outbox SET status = ?, attempts = ?, last_error = ?,
                    next_attempt_at = ? WHERE note_id = ?""",
                ["failed" if final else "pending", attempts, error[:300], retry_at, note_id],
            )
        for event_id in events:
            counts = cur.execute(
                f"""SELECT count(*), count(*) FILTER (WHERE status = 'sent')
                    FROM {LAKE}.alert_outbox WHERE event_id = ? AND kind = 'alert.triggered'""",
                [event_id],
            ).fetchone()
            if counts is not None and counts[0] and counts[0] == counts[1]:
                cur.execute(
                    f"""UPDATE {LAKE}.alert_events SET notification_sent = true
                        WHERE event_id = ? AND NOT notification_sent""",
                    [event_id],
                )


def store_closed(store: Store) -> bool:
    """Whether `store` has been closed (a background task failing at shutdown is no error)."""
    try:
        store.cursor().close()
    except StoreUnavailable:
        return True
    except duckdb.Error:
        return True
    return False
