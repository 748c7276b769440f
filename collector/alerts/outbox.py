"""The alerts topic of the outbox (`collector/outbound/outbox.py`): one message per channel of an
event's notification, sent through the rule's channel, and `notification_sent` set on the event
once every channel has delivered its "triggered" message.

`collector/alerts/consumer.py` queues in the transaction that opens or resolves the event; the
channels are unsealed from `alert_rules` when sent and reached through the registry's `send`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb

from collector.alerts import store as st
from collector.alerts.config import AlertsConfig
from collector.outbound import outbox
from collector.outbound.outbox import Message, Retry, Undeliverable
from collector.secretbox import SecretBox
from collector.store.lake import LAKE
from collector.store.writer import Store

Sender = Callable[[Mapping[str, Any], Mapping[str, Any]], Awaitable[None]]
"""`send(channel_spec, note)`: deliver one notification (kind, title, text, fields, payload)
to one channel (`{"type": "slack" | "webhook" | "email", ...}`); raises when it failed."""

TOPIC = st.OUTBOX_TOPIC
TRIGGERED = "alert.triggered"
# The rows of an alert rule's announcements: what the cool-down and resolutions look back on.
_ANNOUNCED = f"""topic = '{TOPIC}' AND kind = '{TRIGGERED}' AND status <> '{outbox.SUPPRESSED}'"""


def queue(
    cur: duckdb.DuckDBPyConnection,
    event: tuple[str, str, str],
    note: Mapping[str, Any],
    *,
    channels: int,
    now: datetime,
    suppressed: bool = False,
) -> None:
    """One message per channel for `event` (org, event_id, rule_id), in the caller's
    transaction; `suppressed` ones (cool-down) are recorded, never sent."""
    org, event_id, rule_id = event
    for i in range(channels):
        outbox.queue(
            cur,
            TOPIC,
            org=org,
            reference=event_id,
            kind=str(note["kind"]),
            target={"rule_id": rule_id, "channel": i},
            payload=note,
            now=now,
            suppressed=suppressed,
        )


def last_announced_ns(cur: duckdb.DuckDBPyConnection, org: str, rule_id: str) -> int | None:
    """When the rule last announced an event (not suppressed), for its cool-down."""
    row = cur.execute(
        f"""SELECT max(epoch_ns(created_at)) FROM {outbox.TABLE}
            WHERE {_ANNOUNCED} AND org = ? AND json_extract_string(target, '$.rule_id') = ?""",
        [org, rule_id],
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def announced(cur: duckdb.DuckDBPyConnection, event_id: str) -> bool:
    """Whether the event's opening was announced (so its resolution is too): delivered, or
    queued outside a cool-down (rows finished long ago are pruned; the event keeps
    `notification_sent`)."""
    row = cur.execute(
        f"""SELECT coalesce((SELECT notification_sent FROM {LAKE}.alert_events
                             WHERE event_id = $id), false)
                OR EXISTS (SELECT 1 FROM {outbox.TABLE} WHERE {_ANNOUNCED} AND reference = $id)""",
        {"id": event_id},
    ).fetchone()
    return bool(row and row[0])


class AlertsTopic:
    """Delivers a message through channel `target.channel` of rule `target.rule_id`."""

    name = TOPIC

    def __init__(
        self, store: Store, config: AlertsConfig, send: Sender, box: SecretBox | None = None
    ) -> None:
        self._store = store
        self._send = send
        self._box = box
        self.retry = Retry(config.max_attempts, config.retry_base_s, config.retry_max_s)

    async def deliver(self, message: Message) -> None:
        rule_id, channel = str(message.target["rule_id"]), int(message.target["channel"])
        channels = await asyncio.to_thread(self._channels, message.org, rule_id)
        if channel >= len(channels):
            raise Undeliverable("the rule or its channel was removed")
        await self._send(channels[channel], message.payload)

    def _channels(self, org: str, rule_id: str) -> list[Any]:
        """The rule's plaintext channels (blocking)."""
        cur = self._store.cursor()
        try:
            rule = st.get_rule(cur, org, rule_id)
        finally:
            cur.close()
        if rule is None:
            return []
        try:
            spec = st.unseal_channels(rule.spec, self._box)
        except ValueError:
            raise Undeliverable("a channel secret does not open (secrets.key changed?)") from None
        return list(spec.get("channels") or [])

    def finished(self, cur: duckdb.DuckDBPyConnection, messages: Sequence[Message]) -> None:
        """`notification_sent` on each event whose "triggered" messages are all sent."""
        events = sorted({m.reference for m in messages if m.kind == TRIGGERED})
        if not events:
            return
        cur.execute(
            f"""UPDATE {LAKE}.alert_events SET notification_sent = true
                WHERE list_contains($events, event_id) AND NOT notification_sent
                  AND event_id IN (
                    SELECT reference FROM {outbox.TABLE}
                    WHERE topic = '{TOPIC}' AND kind = '{TRIGGERED}'
                      AND list_contains($events, reference)
                    GROUP BY reference HAVING bool_and(status = '{outbox.SENT}'))""",
            {"events": events},
        )
