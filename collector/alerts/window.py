"""Window aggregates for alert rules: per workflow, per tool or per org over the last window.

Parametrised SQL over `runs` (derived), the `tool_calls` view and the output-evaluation
`eval_logs` table (when it exists), run on reader cursors by `WindowEvaluator` after each step;
`collector/alerts/consumer.py` turns them into event decisions in its next step.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb

from collector.store.lake import LAKE
from collector.store.query import ERROR_STATUSES
from collector.store.writer import Store

MAX_SUBJECTS = 1000
# A workflow counts as known to a run-count floor when it ran within this long before the window.
KNOWN_WORKFLOW_LOOKBACK_S = 30 * 86400
_NS = 1_000_000_000

_FINISHED = f"""FROM {LAKE}.runs
    WHERE org = $org AND status <> 'running' AND ended_at BETWEEN $start AND $end
      AND ($workflows::VARCHAR[] IS NULL OR list_contains($workflows::VARCHAR[], workflow_name))"""

_FAILED = "status IN (" + ", ".join(f"'{s}'" for s in ERROR_STATUSES) + ")"

_TOOLS = f"""FROM {LAKE}.tool_calls
    WHERE org = $org AND start_time_unix_nano BETWEEN $start_ns AND $end_ns
      AND tool_name IS NOT NULL
      AND ($tools::VARCHAR[] IS NULL OR list_contains($tools::VARCHAR[], tool_name))
      AND ($workflows::VARCHAR[] IS NULL OR run_id IN (
            SELECT run_id FROM {LAKE}.runs WHERE org = $org
              AND list_contains($workflows::VARCHAR[], workflow_name)))"""

SQL: dict[str, str] = {
    "workflow_error_rate": f"""SELECT workflow_name,
        avg(CASE WHEN {_FAILED} THEN 1.0 ELSE 0.0 END), count(*) {_FINISHED} GROUP BY 1""",
    "workflow_p95_duration_ms": f"""SELECT workflow_name,
        quantile_cont(duration_ms, 0.95), count(duration_ms) {_FINISHED} GROUP BY 1""",
    "workflow_total_cost": f"""SELECT workflow_name, sum(coalesce(cost_usd, 0.0)), count(*)
        {_FINISHED} GROUP BY 1""",
    "workflow_run_count_below": f"""WITH known AS (
            SELECT unnest($workflows::VARCHAR[]) AS workflow_name
            WHERE $workflows::VARCHAR[] IS NOT NULL
            UNION
            SELECT DISTINCT workflow_name FROM {LAKE}.runs
            WHERE $workflows::VARCHAR[] IS NULL AND org = $org
              AND started_at BETWEEN $known_since AND $end
        ), counted AS (
            SELECT workflow_name, count(*) AS n FROM {LAKE}.runs
            WHERE org = $org AND started_at BETWEEN $start AND $end GROUP BY 1
        )
        SELECT k.workflow_name, coalesce(c.n, 0), coalesce(c.n, 0)
        FROM known k LEFT JOIN counted c USING (workflow_name)""",
    "org_total_cost": f"""SELECT '', coalesce(sum(coalesce(cost_usd, 0.0)), 0.0), count(*)
        {_FINISHED}""",
    "org_flagged_outputs": f"""SELECT '', count(*), count(*) FROM {LAKE}.eval_logs
        WHERE org = $org AND status = 'flagged' AND created_at BETWEEN $start AND $end""",
    "tool_error_rate": f"""SELECT tool_name,
        avg(CASE WHEN coalesce(success, true) THEN 0.0 ELSE 1.0 END), count(*)
        {_TOOLS} GROUP BY 1""",
    "tool_p95_latency_ms": f"""SELECT tool_name, quantile_cont(latency_ms, 0.95),
        count(latency_ms) {_TOOLS} GROUP BY 1""",
}

_PARAM = re.compile(r"\$([a-z_]+)")


def aggregates(
    cur: duckdb.DuckDBPyConnection, org: str, spec: Any, now: datetime, now_ns: int
) -> list[tuple[str, float | None, int]]:
    """(subject, value, sample) per subject of `spec`'s window ending `now`, at most
    MAX_SUBJECTS of them; the org's subject is ""."""
    condition = str(spec.condition)
    if condition == "org_flagged_outputs" and not _has_table(cur, "eval_logs"):
        return [("", 0.0, 0)]  # no output evaluation in this store yet: nothing flagged
    window_ns = int(spec.window_s) * _NS
    known_ns = window_ns + KNOWN_WORKFLOW_LOOKBACK_S * _NS
    values: dict[str, Any] = {
        "org": org,
        "start": _ns_to_dt(now_ns - window_ns, now),
        "end": now,
        "known_since": _ns_to_dt(now_ns - known_ns, now),
        "start_ns": now_ns - window_ns,
        "end_ns": now_ns,
        "workflows": list(spec.workflows) or None,
        "tools": list(spec.tools) or None,
    }
    sql = SQL[condition]
    # DuckDB refuses named parameters a statement does not use: bind only the ones it names.
    params = {name: values[name] for name in set(_PARAM.findall(sql))}
    rows = cur.execute(f"{sql} LIMIT {MAX_SUBJECTS}", params).fetchall()
    return [(str(r[0] or ""), None if r[1] is None else float(r[1]), int(r[2] or 0)) for r in rows]


def _ns_to_dt(ns: int, like: datetime) -> datetime:
    return datetime.fromtimestamp(ns / _NS, like.tzinfo)


def _has_table(cur: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = cur.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
        [LAKE, name],
    ).fetchone()
    return row is not None and int(row[0]) > 0


Aggregates = list[tuple[str, float | None, int]]


class WindowEvaluator:
    """Computes the aggregates of due window rules on reader cursors, off the store's writer
    thread; the consumer takes them in its next step and writes the decisions there.

    Each rule version is evaluated at most every `interval_s`, and at most `per_tick` rules
    in one call, so a large rule set is spread over ticks instead of stalling one.
    """

    def __init__(self, store: Store, interval_s: int, per_tick: int) -> None:
        self._store = store
        self._interval_ns = interval_s * _NS
        self._per_tick = per_tick
        self._lock = threading.Lock()
        self._next_due: dict[tuple[str, datetime], int] = {}
        self._ready: dict[str, tuple[datetime, int, Aggregates]] = {}

    def evaluate_due(self, rules: Sequence[Any], now_ns: int) -> int:
        """Aggregate each due rule of `rules` (the consumer's `Rule`s: `.record`, `.spec`) as of
        `now_ns`; returns how many were evaluated. Blocking: run it in a thread."""
        versions = {(r.record.rule_id, r.record.updated_at): r for r in rules if r.spec.is_window}
        with self._lock:  # an edited rule is due at once; a deleted one is forgotten
            self._next_due = {k: v for k, v in self._next_due.items() if k in versions}
            due = [(k, r) for k, r in versions.items() if self._next_due.get(k, 0) <= now_ns]
            due = due[: self._per_tick]
            for key, _ in due:
                self._next_due[key] = now_ns + self._interval_ns
        if not due:
            return 0
        now = datetime.fromtimestamp(now_ns / _NS, UTC)
        cur = self._store.cursor()
        try:
            for (rule_id, version), rule in due:
                found = aggregates(cur, rule.record.org, rule.spec, now, now_ns)
                with self._lock:
                    self._ready[rule_id] = (version, now_ns, found)
        finally:
            cur.close()
        return len(due)

    def has_ready(self) -> bool:
        with self._lock:
            return bool(self._ready)

    def take(self) -> dict[str, tuple[datetime, int, Aggregates]]:
        """The aggregates computed since the last call: rule id → (rule version, as-of, rows)."""
        with self._lock:
            ready, self._ready = self._ready, {}
        return ready
