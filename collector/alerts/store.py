"""Alert tables (`alert_rules`, `alert_events`): DDL, rule records, one event by id and its
manual resolution.

Written by `collector/alerts/consumer.py` (on the writer thread) and `collector/alerts/api.py`;
the read API reads `alert_events` itself (`collector/read/alerts.py`), in the same JSON shape
(`alert_event` in `collector/api/shapes.py`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from collector.api.shapes import ALERT_EVENT_COLUMNS, alert_event
from collector.outbound import outbox
from collector.secretbox import SecretBox
from collector.store.lake import LAKE

DDL = (
    f"""CREATE TABLE IF NOT EXISTS {LAKE}.alert_rules (
  org VARCHAR, rule_id VARCHAR, name VARCHAR, spec JSON, enabled BOOLEAN, source VARCHAR,
  created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ)""",
    f"""CREATE TABLE IF NOT EXISTS {LAKE}.alert_events (
  org VARCHAR, event_id VARCHAR, rule_id VARCHAR, rule_name VARCHAR, condition VARCHAR,
  subject VARCHAR, run_id VARCHAR, workflow_name VARCHAR, status VARCHAR,
  triggered_value DOUBLE, threshold_value DOUBLE, notification_sent BOOLEAN,
  resolved_at TIMESTAMPTZ, resolved_by VARCHAR, cleared_at TIMESTAMPTZ, created_at TIMESTAMPTZ)""",
)
OUTBOX_TOPIC = "alerts"  # the `topic` of alerts' rows in the outbox (collector/alerts/outbox.py)


def create_tables(cur: duckdb.DuckDBPyConnection) -> None:
    for ddl in DDL:
        cur.execute(ddl)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def to_dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1000 / 1e6, UTC).replace(microsecond=ns // 1000 % 10**6)


# -- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleRecord:
    org: str
    rule_id: str
    name: str
    spec: dict[str, Any]  # the rule's fields as JSON (enabled included)
    source: str  # "api" | "config"
    created_at: datetime
    updated_at: datetime


_RULE_COLS = "org, rule_id, name, spec, enabled, source, created_at, updated_at"


# Channel values that are secrets: sealed at rest when the store has a SecretBox.
SEALED = {"slack": ("url",), "webhook": ("secret",)}


def seal_channels(spec: dict[str, Any], box: SecretBox | None) -> dict[str, Any]:
    if box is None:
        return spec
    channels = [
        {k: box.seal(v) if k in SEALED.get(c.get("type"), ()) and isinstance(v, str) else v
         for k, v in c.items()}
        for c in spec.get("channels") or []
    ]  # fmt: skip
    return {**spec, "channels": channels}


def unseal_channels(spec: dict[str, Any], box: SecretBox | None) -> dict[str, Any]:
    """The plaintext channels of a stored spec; ValueError if a secret does not open (the
    `secrets.key` changed)."""
    if box is None:
        return spec
    channels = []
    for c in spec.get("channels") or []:
        keys = SEALED.get(c.get("type"), ())
        channels.append(
            {k: box.unseal(v) if k in keys and str(v).startswith("v1:") else v
             for k, v in c.items()}
        )  # fmt: skip
    return {**spec, "channels": channels}


def _rule(row: tuple[Any, ...], box: SecretBox | None) -> RuleRecord:
    spec = json.loads(row[3])
    with contextlib.suppress(ValueError):  # of another key: shown sealed; delivery says why
        spec = unseal_channels(spec, box)
    spec["enabled"] = bool(row[4])
    return RuleRecord(row[0], row[1], row[2], spec, row[5], row[6], row[7])


def load_rules(
    cur: duckdb.DuckDBPyConnection, org: str | None = None, box: SecretBox | None = None
) -> list[RuleRecord]:
    """Rules (of `org`, else all); channel secrets stay sealed without `box`."""
    rows = cur.execute(
        f"""SELECT {_RULE_COLS} FROM {LAKE}.alert_rules
            WHERE $org::VARCHAR IS NULL OR org = $org ORDER BY org, created_at, rule_id""",
        {"org": org},
    ).fetchall()
    return [_rule(r, box) for r in rows]


def get_rule(
    cur: duckdb.DuckDBPyConnection, org: str, rule_id: str, box: SecretBox | None = None
) -> RuleRecord | None:
    rows = cur.execute(
        f"SELECT {_RULE_COLS} FROM {LAKE}.alert_rules WHERE org = ? AND rule_id = ?",
        [org, rule_id],
    ).fetchall()
    return _rule(rows[0], box) if rows else None


def rule_by_name(
    cur: duckdb.DuckDBPyConnection, org: str, name: str, box: SecretBox | None = None
) -> RuleRecord | None:
    rows = cur.execute(
        f"SELECT {_RULE_COLS} FROM {LAKE}.alert_rules WHERE org = ? AND name = ?", [org, name]
    ).fetchall()
    return _rule(rows[0], box) if rows else None


def put_rule(
    cur: duckdb.DuckDBPyConnection, record: RuleRecord, box: SecretBox | None = None
) -> None:
    """Insert or replace the rule `record.rule_id` of `record.org` (plaintext `spec`; its
    channel secrets are sealed with `box`)."""
    spec = seal_channels({k: v for k, v in record.spec.items() if k != "enabled"}, box)
    cur.execute(
        f"DELETE FROM {LAKE}.alert_rules WHERE org = ? AND rule_id = ?",
        [record.org, record.rule_id],
    )
    cur.execute(
        f"INSERT INTO {LAKE}.alert_rules VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            record.org,
            record.rule_id,
            record.name,
            json.dumps(spec, separators=(",", ":")),
            bool(record.spec.get("enabled", True)),
            record.source,
            record.created_at,
            record.updated_at,
        ],
    )


def delete_rule(cur: duckdb.DuckDBPyConnection, org: str, rule_id: str) -> None:
    cur.execute(f"DELETE FROM {LAKE}.alert_rules WHERE org = ? AND rule_id = ?", [org, rule_id])
    # Its pending notifications can no longer be delivered: the channels went with the rule.
    cur.execute(
        f"""UPDATE {outbox.TABLE} SET status = '{outbox.FAILED}', last_error = 'rule deleted',
                done_at = ?
            WHERE topic = ? AND org = ? AND json_extract_string(target, '$.rule_id') = ?
              AND status = '{outbox.PENDING}'""",
        [datetime.now(UTC), OUTBOX_TOPIC, org, rule_id],
    )


# -- events ---------------------------------------------------------------------------------


def get_event(cur: duckdb.DuckDBPyConnection, org: str, event_id: str) -> dict[str, Any] | None:
    rows = cur.execute(
        f"SELECT {ALERT_EVENT_COLUMNS} FROM {LAKE}.alert_events WHERE org = ? AND event_id = ?",
        [org, event_id],
    ).fetchall()
    return alert_event(rows[0]) if rows else None


def resolve_by_hand(
    cur: duckdb.DuckDBPyConnection, org: str, event_id: str, now: datetime
) -> dict[str, Any] | None:
    """Resolve one event (idempotent: a resolved event stays as it was); None if `org` has no
    such event."""
    event = get_event(cur, org, event_id)
    if event is None or event["resolved_at"] is not None:
        return event
    cur.execute(
        f"""UPDATE {LAKE}.alert_events SET resolved_at = ?, resolved_by = 'manual'
            WHERE org = ? AND event_id = ?""",
        [now, org, event_id],
    )
    return get_event(cur, org, event_id)
