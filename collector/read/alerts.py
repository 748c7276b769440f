"""The alert events the read API shows: a page of `GET /api/alert-events` and a run's newest five
(its detail's `alert_events`), read from the `alert_events` table the alerts consumer writes.

Keyset paging on (created_at, event_id): events that share a creation time are each seen once.
The web UI's alert feed reads the same page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from collector.api.shapes import ALERT_EVENT_COLUMNS, alert_event
from collector.store.lake import LAKE
from collector.store.query import Window
from collector.store.readers import Reads

RUN_EVENTS_LIMIT = 5
EVENT_SORT = "created_at_desc"


@dataclass(frozen=True)
class AlertEventFilter:
    org: str
    window: Window
    rule_id: str | None = None
    resolved: bool | None = None


def list_events(
    store: Reads, where: AlertEventFilter, after: tuple[int, str] | None, limit: int
) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
    """One page of `where.org`'s events, newest first, after the (created µs, id) position;
    and the position of the page's last row when there is a next page."""
    sql = f"""SELECT {ALERT_EVENT_COLUMNS} FROM {LAKE}.alert_events
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
    return [alert_event(r) for r in page], ((page[-1][9], page[-1][0]) if more else None)


def run_events(store: Reads, org: str, run_id: str) -> list[dict[str, Any]]:
    """The newest five events fired for one run (the run detail's `alert_events`)."""
    sql = f"""SELECT {ALERT_EVENT_COLUMNS} FROM {LAKE}.alert_events
        WHERE org = ? AND run_id = ? ORDER BY created_at DESC, event_id DESC LIMIT ?"""
    return [alert_event(r) for r in _read(store, sql, [org, run_id, RUN_EVENTS_LIMIT])]


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
