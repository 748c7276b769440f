"""Callbacks and notifications of evaluated and reviewed logs: the evals topic of the outbox.

`enqueue` runs inside the transaction that writes a verdict or a decision and queues one outbox
message per delivery (the log's `callbackUrl`, Slack, email, the outbound webhook);
`Callbacks` sends them for the outbox (`collector/outbound/outbox.py`): callbacks signed with the
workspace secret, notifications through the workspace's channels (`collector/outbound/notify.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from collector.api.shapes import iso
from collector.evals import store as ls
from collector.evals.config import EvalsConfig
from collector.outbound import client as outbound
from collector.outbound import outbox
from collector.outbound.outbox import Message, Retry, Undeliverable

TOPIC = "evals"
# callbackEvents → which events call back: "evaluated:<status>" or "decision".
CALLBACK_MATCH: dict[str, Callable[[str, str], bool]] = {
    "all": lambda event, status: event == "evaluated",
    "flagged_error": lambda event, status: event == "evaluated" and status in ("flagged", "error"),
    "decisions": lambda event, status: event == "decision",
    "flagged_error_decisions": lambda event, status: (
        event == "decision" or status in ("flagged", "error")
    ),
    "pass": lambda event, status: event == "evaluated" and status == "pass",
}
WEBHOOK_EVENTS = ("flagged", "error", "pass", "decision")


def event_payload(row: Mapping[str, Any], event: str) -> dict[str, Any]:
    """What a callback receives: the log's verdict (as GET /api/logs/{id}/status shows it)."""
    status = row["status"]
    return {
        "event": f"log.{event}",
        "id": row["id"],
        "status": status,
        "verdict": None if status == "pending" else status,
        "confidenceScore": row.get("confidence_score"),
        "explanation": row.get("explanation"),
        "humanDecision": row.get("decision"),
        "decidedBy": row.get("decided_by"),
        "projectId": row.get("project_id"),
        "projectName": row.get("project"),
        "taskName": row.get("task"),
        "timestamp": iso(row["created_at"]) if row.get("created_at") else None,
        "rules": ls.loads(row.get("rules")) or [],
        "runId": row.get("run_id"),
    }


Kinds = list[tuple[str, str | None]]
"""(kind, callback URL) of each delivery an event makes: callback, slack, email, webhook."""


def deliveries(
    row: Mapping[str, Any], event: str, settings: Mapping[str, Any], secrets: Collection[str]
) -> Kinds:
    """Which deliveries `row`'s `event` ("evaluated" or "decision") makes, given the
    workspace's settings and the names of its secrets (where webhook URLs live)."""
    status = str(row["status"])
    kinds: Kinds = []
    events = row.get("callback_events") or "all"
    if row.get("callback_url") and CALLBACK_MATCH.get(events, CALLBACK_MATCH["all"])(event, status):
        kinds.append(("callback", row["callback_url"]))
    evaluated = event == "evaluated"
    flagged, failed = evaluated and status == "flagged", evaluated and status == "error"

    def wanted(on_flag: str, on_fail: str) -> bool:
        return bool(
            (flagged and settings.get(on_flag, True)) or (failed and settings.get(on_fail, True))
        )

    slack = "slackWebhookUrl" in secrets and settings.get("slackNotificationsEnabled", True)
    if slack and wanted("notifyOnFlag", "notifyOnFail"):
        kinds.append(("slack", None))
    email = settings.get("notificationEmail") and settings.get("emailNotificationsEnabled", True)
    if email and wanted("emailOnFlag", "emailOnFail"):
        kinds.append(("email", None))
    hook = "decision" if event == "decision" else status
    if (
        "outboundWebhookUrl" in secrets
        and settings.get("webhookEnabled", True)
        and hook in settings.get("outboundWebhookEvents", ["flagged", "error"])
    ):
        kinds.append(("webhook", None))
    return kinds


def enqueue(
    cur: duckdb.DuckDBPyConnection,
    row: Mapping[str, Any],
    event: str,
    now: datetime,
    kinds: Kinds | None = None,
) -> int:
    """Outbox messages for `row`'s `event` (`kinds`, else read from the workspace row here), in
    the caller's transaction; kick the outbox after the commit."""
    if kinds is None:
        ws = ls.workspace_row(cur, str(row["org"]))
        settings = (ls.loads(ws["settings"]) if ws else None) or {}
        sealed = (ls.loads(ws["secrets"]) if ws else None) or {}
        kinds = deliveries(row, event, settings, set(sealed))
    if not kinds:
        return 0
    payload = event_payload(row, event)
    for channel, url in kinds:
        outbox.queue(
            cur,
            TOPIC,
            org=str(row["org"]),
            reference=str(row["id"]),
            kind=payload["event"],
            target={"channel": channel, "url": url} if url else {"channel": channel},
            payload=payload,
            now=now,
        )
    return len(kinds)


@dataclass(frozen=True)
class Note:
    """A notification in the shape the registry's channels send (collector/outbound/notify.py)."""

    kind: str
    title: str
    text: str
    fields: Mapping[str, str]
    payload: Mapping[str, Any]


def note_for(payload: Mapping[str, Any], cost: float | None) -> Note:
    status, project = payload["status"], payload.get("projectName") or "?"
    task = f" / {payload['taskName']}" if payload.get("taskName") else ""
    title = f"Output {status} — {project}{task}"
    fields = {"Project": str(project), "Status": str(status), "Log": str(payload["id"])}
    if payload.get("taskName"):
        fields["Task"] = str(payload["taskName"])
    if cost is not None:
        fields["Estimated incident cost"] = f"${cost:,.2f}"
    text = str(payload.get("explanation") or title)
    body = {**payload, "estimatedIncidentCostUsd": cost}
    return Note(f"log.{status}", title, text, fields, body)


Secrets = Callable[[str], Awaitable[tuple[dict[str, Any], dict[str, str]]]]
"""org → (its settings, its unsealed secrets), read fresh for each delivery."""


class Callbacks:
    """Delivers a message to `target.channel`: the callback URL it names, or the workspace's
    Slack, email or outbound webhook as its settings say at send time."""

    name = TOPIC

    def __init__(
        self,
        policy: outbound.OutboundPolicy,
        secrets: Secrets,
        build_channel: Callable[[Mapping[str, Any]], Any] | None,
        config: EvalsConfig,
    ) -> None:
        self._policy = policy
        self._secrets = secrets
        self._build_channel = build_channel
        self.retry = Retry(
            config.callback_attempts, config.callback_base_delay_s, config.callback_max_delay_s
        )

    async def deliver(self, message: Message) -> None:
        settings, secrets = await self._secrets(message.org)
        channel = str(message.target.get("channel"))
        if channel == "callback":
            url = str(message.target["url"])
            secret = secrets.get("callbackSecret")
            await outbound.post_json(url, message.payload, policy=self._policy, secret=secret)
            return
        spec = _channel_spec(channel, settings, secrets)
        if spec is None or self._build_channel is None:
            raise Undeliverable(f"{channel} is no longer configured")
        try:
            sender = self._build_channel(spec)
        except ValueError as e:  # says what is wrong, never the URL or secret
            raise Undeliverable(f"{channel}: {e}") from None
        cost = settings.get("estimatedIncidentCostUsd")
        await sender.send(note_for(message.payload, cost))

    def finished(self, cur: duckdb.DuckDBPyConnection, messages: Sequence[Message]) -> None:
        return None  # nothing records a delivery's end but the outbox row


def _channel_spec(
    kind: str, settings: Mapping[str, Any], secrets: Mapping[str, str]
) -> dict[str, Any] | None:
    if kind == "slack" and secrets.get("slackWebhookUrl"):
        return {"type": "slack", "url": secrets["slackWebhookUrl"]}
    if kind == "webhook" and secrets.get("outboundWebhookUrl"):
        return {
            "type": "webhook",
            "url": secrets["outboundWebhookUrl"],
            "secret": secrets.get("callbackSecret"),
        }
    if kind == "email" and settings.get("notificationEmail"):
        return {"type": "email", "to": [settings["notificationEmail"]]}
    return None
