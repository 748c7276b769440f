"""Callbacks and notifications of evaluated and reviewed logs, through a durable outbox.

`enqueue` runs inside the transaction that writes a verdict or a decision and adds one
`eval_outbox` row per delivery (the log's `callbackUrl`, Slack, email, the outbound webhook);
`Outbox` sends due rows on the event loop, signed, retried with backoff across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from collector.api.shapes import iso
from collector.evals import store as ls
from collector.outbound import client as outbound
from collector.store.writer import Store

log = logging.getLogger(__name__)
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
KEEP_DONE = timedelta(days=7)  # finished deliveries are kept this long (their last_error too)
PRUNE_EVERY_S = 3600.0


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
    """Outbox rows for `row`'s `event` (`kinds`, else read from the workspace row here)."""
    if kinds is None:
        ws = ls.workspace_row(cur, str(row["org"]))
        settings = (ls.loads(ws["settings"]) if ws else None) or {}
        sealed = (ls.loads(ws["secrets"]) if ws else None) or {}
        kinds = deliveries(row, event, settings, set(sealed))
    if not kinds:
        return 0
    payload = event_payload(row, event)
    for kind, url in kinds:
        ls.insert(
            cur,
            "eval_outbox",
            {
                "org": row["org"],
                "id": ls.new_id(),
                "log_id": row["id"],
                "kind": kind,
                "url": url,
                "payload": ls.dumps(payload),
                "attempts": 0,
                "next_at": now,
                "created_at": now,
            },
        )
    return len(kinds)


@dataclass(frozen=True)
class Note:
    """A notification in the shape the registry's channels send (exporters/notify.py)."""

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


class Outbox:
    def __init__(
        self,
        store: Store,
        policy: outbound.OutboundPolicy,
        secrets: Secrets,
        build_channel: Callable[[Mapping[str, Any]], Any] | None,
        *,
        attempts: int = 8,
        base_delay_s: float = 2.0,
        max_delay_s: float = 600.0,
    ) -> None:
        self._store = store
        self._policy = policy
        self._secrets = secrets
        self._build_channel = build_channel
        self._attempts = attempts
        self._base = base_delay_s
        self._max = max_delay_s
        self._wake = asyncio.Event()
        self.delivered = 0

    def kick(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        pruned = 0.0
        while not stop.is_set():
            self._wake.clear()
            try:
                more = await self.deliver_due()
                if time.monotonic() - pruned > PRUNE_EVERY_S:
                    pruned = time.monotonic()
                    await self.prune(datetime.now(UTC) - KEEP_DONE)
            except Exception:
                log.exception("outbox delivery failed")
                more = False
            if more:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    async def prune(self, before: datetime) -> None:
        """Forget deliveries finished (sent or given up) before `before`."""
        await self._store.acall(
            lambda cur: cur.execute(
                "DELETE FROM eval_outbox WHERE done_at IS NOT NULL AND done_at < ?", [before]
            )
        )

    async def deliver_due(self, limit: int = 50) -> bool:
        now = datetime.now(UTC)
        rows = await asyncio.to_thread(
            self._store.query,
            "SELECT org, id, kind, url, payload, attempts FROM eval_outbox WHERE done_at IS NULL "
            "AND next_at <= ? ORDER BY next_at LIMIT ?",
            [now, limit],
        )
        results = await asyncio.gather(*(self._send(r) for r in rows))
        done = datetime.now(UTC)

        def write(cur: duckdb.DuckDBPyConnection) -> None:
            for (org, oid, *_), (ok, retry, error, attempts) in zip(rows, results, strict=True):
                if ok or not retry or attempts >= self._attempts:
                    cur.execute(
                        "UPDATE eval_outbox SET done_at = ?, attempts = ?, last_error = ? "
                        "WHERE org = ? AND id = ?",
                        [done, attempts, None if ok else error, org, oid],
                    )
                else:
                    delay = outbound.backoff(attempts - 1, self._base, self._max)
                    cur.execute(
                        "UPDATE eval_outbox SET attempts = ?, next_at = ?, last_error = ? "
                        "WHERE org = ? AND id = ?",
                        [attempts, done + timedelta(seconds=delay), error, org, oid],
                    )

        if rows:
            await self._store.acall(write)
            self.delivered += sum(1 for ok, *_ in results if ok)
        return len(rows) == limit

    async def _send(self, row: tuple[Any, ...]) -> tuple[bool, bool, str | None, int]:
        """(delivered, worth retrying, error, attempts so far)."""
        org, _, kind, url, payload_text, attempts = row
        attempts = int(attempts) + 1
        payload = ls.loads(payload_text)
        try:
            settings, secrets = await self._secrets(org)
            if kind == "callback":
                await outbound.post_json(
                    url, payload, policy=self._policy, secret=secrets.get("callbackSecret")
                )
                return True, False, None, attempts
            spec = _channel_spec(kind, settings, secrets)
            if spec is None or self._build_channel is None:
                return False, False, f"{kind} is no longer configured", attempts
            cost = settings.get("estimatedIncidentCostUsd")
            await self._build_channel(spec).send(note_for(payload, cost))
            return True, False, None, attempts
        except outbound.OutboundRefused as e:
            return False, False, f"refused: {e}", attempts
        except outbound.OutboundFailed as e:
            return False, outbound.retryable(e), str(e), attempts
        except Exception as e:
            return False, True, f"{type(e).__name__}: {e}", attempts


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
