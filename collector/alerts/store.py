"""Alert tables (`alert_rules`, `alert_events`): DDL, rule records, the event feed and its JSON
shape (`AlertEvent` of the Trakr dashboard API doc), manual resolution.

Written by `collector/alerts/consumer.py` (on the writer thread) and `collector/alerts/api.py`;
read by the read API (`GET /api/alert-events`, a run's `alert_events`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from collector.api.shapes import rfc3339
from collector.outbound import outbox
from collector.secretbox import SecretBox
from collector.store.lake import LAKE
from collector.store.query import Window
from collector.store.readers import Reads
from collector.store.writer import Store

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
RUN_EVENTS_LIMIT = 5
EVENT_SORT = "created_at_desc"
_EVENT_COLS = """event_id, rule_id, rule_name, run_id, workflow_name, triggered_value,
    threshold_value, notification_sent, epoch_us(resolved_at), epoch_us(created_at)"""


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


def event_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row of `_EVENT_COLS` as the documented AlertEvent."""
    return {
        "id": row[0],
        "alert_rule_id": row[1],
        "alert_rule_name": row[2],
        "run_id": row[3],
        "workflow_name": row[4],
        "triggered_value": float(row[5]),
        "threshold_value": float(row[6]),
        "notification_sent": bool(row[7]),
        "resolved_at": rfc3339(row[8]),
        "created_at": rfc3339(row[9]),
    }


@dataclass(frozen=True)
class AlertEventFilter:
    org: str
    window: Window
    rule_id: str | None = None
    resolved: bool | None = None


def list_events(
    store: Store, where: AlertEventFilter, after: tuple[int, str] | None, limit: int
) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
    """One page of `where.org`'s events, newest first, after the (created µs, id) position;
    and the position of the page's last row when there is a next page."""
    sql = f"""SELECT {_EVENT_COLS} FROM {LAKE}.alert_events
        WHERE org = $org AND created_at BETWEEN $start AND $end
          AND ($rule_id::VARCHAR IS NULL OR rule_id = $rule_id)
          AND ($resolved::BOOLEAN IS NULL OR (resolved_at IS NOT NULL) = $resolved)
          AND ($after_us::BIGINT IS NULL OR epoch_us(created_at) < $after_us
               OR (epoch_us(created_at) = $after_us AND event_id < $after_id))
        ORDER BY created_at DESC, event_id DESC LIMIT $limit"""
    params = {
        "org": where.org,
        "start": where.window.start,
        "end": where.window.end,
        "rule_id": where.rule_id,
        "resolved": where.resolved,
        "after_us": None if after is None else after[0],
        "after_id": None if after is None else after[1],
        "limit": limit + 1,
    }
    rows = _read(store, sql, params)
    page = rows[:limit]
    more = len(rows) > limit
    return [event_json(r) for r in page], ((page[-1][9], page[-1][0]) if more else None)


def run_events(store: Reads, org: str, run_id: str) -> list[dict[str, Any]]:
    """The newest five events fired for one run (the run detail's `alert_events`)."""
    sql = f"""SELECT {_EVENT_COLS} FROM {LAKE}.alert_events
        WHERE org = ? AND run_id = ? ORDER BY created_at DESC, event_id DESC LIMIT ?"""
    return [event_json(r) for r in _read(store, sql, [org, run_id, RUN_EVENTS_LIMIT])]


def _read(store: Reads, sql: str, params: Any) -> list[tuple[Any, ...]]:
    try:
        return store.query(sql, params)
    except duckdb.CatalogException:
        if _tables_exist(store):
            raise
        return []  # alerts not set up in this store (yet): no events


def _tables_exist(store: Reads) -> bool:
    rows = store.query(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
        [LAKE, "alert_events"],
    )
    return bool(rows) and int(rows[0][0]) == 1


def get_event(cur: duckdb.DuckDBPyConnection, org: str, event_id: str) -> dict[str, Any] | None:
    rows = cur.execute(
        f"SELECT {_EVENT_COLS} FROM {LAKE}.alert_events WHERE org = ? AND event_id = ?",
        [org, event_id],
    ).fetchall()
    return event_json(rows[0]) if rows else None


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
