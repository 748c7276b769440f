"""The `roi_events` table: one row per tracked task, written through the store's group commit.

The row also carries the Idempotency-Key and the exact response, so an event and its key are
durable together (one row, one commit); `idempotency_keys` is a view over those rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from collector.model import Rows
from collector.store.lake import LAKE
from collector.store.schema import Column
from collector.store.writer import Store

TABLE = "roi_events"
IDEMPOTENCY_WINDOW = timedelta(hours=24)
_TS = pa.timestamp("us", tz="UTC")
_S, _F, _I = pa.string(), pa.float64(), pa.int64()


def _c(name: str, arrow: pa.DataType, sql: str, doc: str = "") -> Column:
    return Column(name, arrow, sql, doc)


COLUMNS: tuple[Column, ...] = (
    _c("org", _S, "VARCHAR", "owning org"),
    _c("event_id", _S, "VARCHAR", "evt_ + 26-char ULID, sortable by creation time"),
    _c("agent_id", _S, "VARCHAR"),
    _c("task_type", _S, "VARCHAR"),
    _c("outcome", _S, "VARCHAR", "success | failure | needs_review"),
    _c("occurred_at", _TS, "TIMESTAMPTZ", "when the task ran (the body's, else receipt time)"),
    _c("received_at", _TS, "TIMESTAMPTZ", "when the collector received it"),
    _c("agent_duration_seconds", _F, "DOUBLE"),
    _c("baseline_minutes", _F, "DOUBLE", "resolved_baseline_minutes"),
    _c("baseline_source", _S, "VARCHAR", "request | override | builtin | custom | fallback"),
    _c("hourly_rate", _F, "DOUBLE", "org rate at the time, in `currency`"),
    _c("currency", _S, "VARCHAR"),
    _c("hours_saved", _F, "DOUBLE", "3 places"),
    _c("cost_saved", _F, "DOUBLE", "2 places, in `currency`"),
    _c("agent_cost", _F, "DOUBLE", "6 places, in `currency`; NULL when unknown"),
    _c("cost_source", _S, "VARCHAR", "provided | computed | none"),
    _c("agent_cost_usd", _F, "DOUBLE", "the price book's USD figure when computed"),
    _c("price_book_version", _S, "VARCHAR"),
    _c("net_saved", _F, "DOUBLE", "cost_saved - agent_cost, 6 places"),
    _c("model", _S, "VARCHAR"),
    _c("tokens_in", _I, "BIGINT"),
    _c("tokens_out", _I, "BIGINT"),
    _c("metadata", _S, "JSON"),
    _c("audit_sample", _S, "JSON"),
    _c("trace_id", _S, "VARCHAR", "links the event to a traced run"),
    _c("span_id", _S, "VARCHAR", "parent span from the traceparent header"),
    _c("run_id", _S, "VARCHAR", "the caller's run id"),
    _c("key_id", _S, "VARCHAR", "the ingest key that sent it"),
    _c("idempotency_key", _S, "VARCHAR"),
    _c("response", _S, "JSON", "the 201 body exactly as sent, replayed for a repeated key"),
)
SCHEMA = pa.schema([pa.field(c.name, c.arrow) for c in COLUMNS])
NAMES = tuple(c.name for c in COLUMNS)
# What reads return: everything but the org (implicit) and the replay copy of the response.
PUBLIC = tuple(n for n in NAMES if n not in ("org", "response"))

_VIEW = f"""CREATE OR REPLACE VIEW {LAKE}.idempotency_keys AS
SELECT org, idempotency_key, event_id, key_id, received_at AS created_at,
       received_at + INTERVAL 24 HOUR AS expires_at, response
FROM {LAKE}.{TABLE} WHERE idempotency_key IS NOT NULL"""


def create_tables(store: Store) -> None:
    store.call(create_in)


def create_in(cur: Any) -> None:
    """The table and the view, on a writer cursor (idempotent)."""
    cols = ",\n  ".join(f"{c.name} {c.sql}" for c in COLUMNS)
    cur.execute(f"CREATE TABLE IF NOT EXISTS {LAKE}.{TABLE} (\n  {cols}\n)")
    cur.execute(_VIEW)


def event_rows(org: str, record: dict[str, Any]) -> Rows:
    """One event as `Rows` for `store.append` (acknowledged once durable)."""
    table = pa.Table.from_pylist([{n: record.get(n) for n in NAMES} | {"org": org}], SCHEMA)
    return Rows(signal=None, org=org, table=table, target=TABLE)


def stored_response(store: Store, org: str, key: str, now: datetime) -> str | None:
    """The response first sent for `key` in `org` within the last 24 h, if any."""
    rows = store.query(
        f"SELECT response FROM {TABLE} WHERE org = ? AND idempotency_key = ? "
        "AND received_at >= ? ORDER BY received_at LIMIT 1",
        [org, key, now - IDEMPOTENCY_WINDOW],
    )
    return str(rows[0][0]) if rows else None


def recent_keys(store: Store, now: datetime, cap: int) -> list[tuple[str, str, datetime]]:
    """Idempotency keys of the last 24 h, oldest first (at most `cap` + 1, to see overflow)."""
    rows = store.query(
        f"SELECT org, idempotency_key, received_at FROM {TABLE} "
        "WHERE idempotency_key IS NOT NULL AND received_at >= ? ORDER BY received_at DESC "
        "LIMIT ?",
        [now - IDEMPOTENCY_WINDOW, cap + 1],
    )
    return [(str(r[0]), str(r[1]), r[2]) for r in reversed(rows)]


def count_since(store: Store, org: str, since: datetime) -> int:
    """Events tracked through the API (an ingest key sent them; not those of traced runs)."""
    rows = store.query(
        f"SELECT count(*) FROM {TABLE} WHERE org = ? AND received_at >= ? AND key_id IS NOT NULL",
        [org, since],
    )
    return int(rows[0][0])


@dataclass(frozen=True)
class RoiEventFilter:
    org: str
    start: datetime
    end: datetime
    agent_ids: tuple[str, ...] = ()
    task_types: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    trace_id: str | None = None
    run_id: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # (JSON path, value as text)


def where_sql(f: RoiEventFilter) -> tuple[str, list[Any]]:
    """A WHERE clause of placeholders only; values and JSON paths go in as parameters."""
    parts = ["org = ?", "occurred_at BETWEEN ? AND ?"]
    params: list[Any] = [f.org, f.start, f.end]
    for column, values in (
        ("agent_id", f.agent_ids),
        ("task_type", f.task_types),
        ("outcome", f.outcomes),
        ("model", f.models),
    ):
        if values:
            parts.append(f"{column} IN (SELECT unnest(?::VARCHAR[]))")
            params.append(list(values))
    for column, value in (("trace_id", f.trace_id), ("run_id", f.run_id)):
        if value is not None:
            parts.append(f"{column} = ?")
            params.append(value)
    for path, value in f.metadata:
        parts.append("json_extract_string(metadata, ?) = ?")
        params += [path, value]
    return " AND ".join(parts), params


def list_events(
    store: Store, f: RoiEventFilter, after: tuple[int, str] | None, limit: int
) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
    """A page, newest first (occurred_at, then event_id), and the position after it."""
    where, params = where_sql(f)
    if after is not None:
        where += " AND (epoch_us(occurred_at) < ? OR (epoch_us(occurred_at) = ? AND event_id < ?))"
        params += [after[0], after[0], after[1]]
    rows = store.query(
        f"SELECT {', '.join(PUBLIC)}, epoch_us(occurred_at) FROM {TABLE} WHERE {where} "
        "ORDER BY occurred_at DESC, event_id DESC LIMIT ?",
        [*params, limit + 1],
    )
    page = [_record(r) for r in rows[:limit]]
    # The tie-breaker is the event id (unique), the column the ORDER BY and WHERE use.
    nxt = None
    if len(rows) > limit:
        last = rows[limit - 1]
        nxt = (int(last[-1]), str(last[PUBLIC.index("event_id")]))
    return page, nxt


def get_event(store: Store, org: str, event_id: str) -> dict[str, Any] | None:
    rows = store.query(
        f"SELECT {', '.join(PUBLIC)}, 0 FROM {TABLE} WHERE org = ? AND event_id = ? LIMIT 1",
        [org, event_id],
    )
    return _record(rows[0]) if rows else None


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(PUBLIC, row[: len(PUBLIC)], strict=True))
    for name in ("metadata", "audit_sample"):
        if out[name] is not None:
            out[name] = json.loads(out[name])
    return out
