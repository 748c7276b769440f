"""One run's detail for `GET /api/runs/{id}`: the run, its LLM calls and tool events, child runs,
combined cost, alert events, output evaluations and ROI events, read from the store's tables.

The lookups run on two snapshot readers (`collector/store/readers.py`) on two threads, so that one
DuckLake transaction serves several queries and each thread's planning overlaps the other's
(DuckDB releases the GIL). The read API serialises the result (`collector/api/shapes.py`).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from collector.read import alerts as ra
from collector.read import runs as qr
from collector.store.keys import run_key
from collector.store.lake import LAKE
from collector.store.query import fetch
from collector.store.readers import Reads
from collector.store.writer import Store

_META = f"__ducklake_metadata_{LAKE}"
# Tables of features a store may not use at all (alert rules, output rules, ROI tracking).
_SIDE_TABLES = ("alert_events", "eval_logs", "roi_events")


@dataclass(frozen=True)
class FullDetail:
    run: qr.RunDetail
    alert_events: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]
    roi: list[RoiEvent]


def written_tables(store: Reads, names: tuple[str, ...]) -> set[str]:
    """Those of `names` that have ever held a committed row. DuckLake's row-id counter only
    grows, so a table whose counter is still 0 is empty in every snapshot: a lookup there can
    be skipped (it would cost a DuckLake scan's planning for nothing)."""
    rows = store.query(
        f"""SELECT t.table_name FROM {_META}.ducklake_table t
            JOIN {_META}.ducklake_table_stats s USING (table_id)
            WHERE t.end_snapshot IS NULL AND s.next_row_id > 0
              AND t.table_name IN (SELECT unnest(?::VARCHAR[]))""",
        [list(names)],
    )
    return {str(r[0]) for r in rows}


def get_detail(store: Store, org: str, run_id: str) -> FullDetail | None:
    """`run_id`'s detail, None if `org` has no such run.

    Reader A finds the run (its row lists its calls' span ids), then reads the LLM and tool
    spans of its trace in its time window; reader B reads what needs only the run id (children,
    alert events, evaluations), then what needs the run row: its ROI events, and its calls'
    span ids from `span_runs` when the row does not list them. Each DuckLake scan costs
    planning (snapshot, file lists) that on one reader adds up and on two overlaps.
    """
    if run_key(org, run_id) is None:
        return None  # not the shape of a run id: no run has it
    found: Future[tuple[Any, ...] | None] = Future()
    with ThreadPoolExecutor(max_workers=1) as pool:
        side = pool.submit(_side, store, org, run_id, found)
        try:
            with store.reader() as r:
                row = qr.find_run(r, org, run_id)
                found.set_result(row)
                if row is None:
                    side.result()
                    return None
                window = qr.trace_window(r, org, row)
                b = side.result()
                # A trace too big for the window query: the join, which reads only the run's.
                spans = (
                    qr.run_spans(r, org, row)
                    if window is None
                    else qr.run_spans_of(window, b.call_ids)
                )
                combined = qr.combined_cost(r, org, row, b.children)
        except BaseException as e:
            if not found.done():
                found.set_exception(e)  # the side thread must not wait for it
            raise
    return FullDetail(
        run=qr.run_detail(row, spans, b.children, combined),
        alert_events=b.alert_events,
        evaluations=b.evaluations,
        roi=b.roi,
    )


@dataclass(frozen=True)
class _Side:
    children: list[tuple[Any, ...]]
    alert_events: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]
    call_ids: set[str]
    roi: list[RoiEvent]


def _side(store: Store, org: str, run_id: str, found: Future[tuple[Any, ...] | None]) -> _Side:
    with store.reader() as r:
        written = written_tables(r, _SIDE_TABLES)
        children = qr.run_children(r, org, run_id)
        alerts = ra.run_events(r, org, run_id) if "alert_events" in written else []
        evaluations = run_evaluations(r, org, run_id) if "eval_logs" in written else []
        row = found.result()
        if row is None:
            return _Side(children, alerts, evaluations, set(), [])
        listed = qr.listed_calls(row)
        call_ids = qr.run_call_ids(r, org, row) if listed is None else listed
        roi: list[RoiEvent] = []
        if "roi_events" in written:
            roi = run_roi(r, org, qr.run_detail(row, ([], []), [], 0.0))
    return _Side(children, alerts, evaluations, call_ids, roi)


def run_evaluations(store: Reads, org: str, run_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """Verdicts of output rules on one traced run (the `eval_logs` rows that output evaluation
    writes for runs, `collector/evals/runs.py`), newest first; none before that table exists."""
    try:
        rows = store.query(
            """SELECT id, project, task, status, confidence_score, explanation, decision,
                      created_at
               FROM eval_logs WHERE org = ? AND run_id = ?
               ORDER BY created_at DESC, seq DESC LIMIT ?""",
            [org, run_id, limit],
        )
    except duckdb.CatalogException:
        return []
    names = ("id", "project", "task", "status", "confidence_score", "explanation", "decision")
    return [
        {
            **dict(zip(names, r[:7], strict=True)),
            "created_at": r[7].isoformat().replace("+00:00", "Z"),
        }
        for r in rows
    ]


# Events linked to a run: by run id (ours or the framework's), else by trace, pinned to the run
# whose spans include the event's span (a traceparent's parent span), else to the trace's top run.
# No event is about a run that starts over a day later: that bound lets older files be skipped.
# Two plain scans beat one query with subqueries here: planning that costs more than the scan.
_RUN_ROI_SQL = """SELECT event_id, key_id IS NULL AS traced, agent_id, task_type, outcome,
    hours_saved, cost_saved, agent_cost, cost_source, net_saved, currency, epoch_us(occurred_at),
    run_id, span_id
    FROM roi_events
    WHERE org = $org AND occurred_at >= $since
      AND (run_id = $run_id OR run_id = $external OR (trace_id = $trace_id AND run_id IS NULL))
    ORDER BY occurred_at, event_id
    LIMIT $limit"""
_TRACE_SPANS_SQL = """SELECT span_id, run_id FROM span_runs
    WHERE org = $org AND trace_id = $trace_id
      AND span_id IN (SELECT unnest($span_ids::VARCHAR[]))"""
MAX_RUN_ROI_EVENTS = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RoiEvent:
    event_id: str
    traced: bool  # from the run itself (the `roi:` mapping), else sent to /v1/track
    agent_id: str
    task_type: str
    outcome: str
    hours_saved: float
    cost_saved: float
    agent_cost: float | None
    cost_source: str
    net_saved: float
    currency: str
    occurred_at_us: int


def run_roi(store: Reads, org: str, detail: qr.RunDetail) -> list[RoiEvent]:
    """The ROI events linked to the run of `detail` (at most MAX_RUN_ROI_EVENTS, oldest first);
    none before the ROI tables exist."""
    trace_id = detail.extra["trace_id"]
    parent = detail.extra.get("parent_run_id")
    top = parent is None or not str(parent).startswith(str(trace_id))
    params = {
        "org": org,
        "run_id": detail.summary.id,
        "external": detail.summary.run_id_external,
        "trace_id": trace_id,
        "since": _EPOCH + timedelta(microseconds=detail.summary.started_at_us) - timedelta(days=1),
        # Trace-linked events of other runs of the trace are dropped after the scan.
        "limit": 4 * MAX_RUN_ROI_EVENTS,
    }
    try:
        rows = store.query(_RUN_ROI_SQL, params)
    except duckdb.CatalogException:  # no roi_events table yet
        return []
    by_trace = [r for r in rows if r[12] is None]
    owners: dict[str, str] = {}
    spans = sorted({str(r[13]) for r in by_trace if r[13] is not None})
    if spans:
        found = fetch(
            store, _TRACE_SPANS_SQL, {"org": org, "trace_id": trace_id, "span_ids": spans}
        )
        owners = {str(span): str(run) for span, run in found}
    keep = [
        r
        for r in rows
        if r[12] is not None
        or (r[13] is not None and owners.get(str(r[13])) == detail.summary.id)
        or (top and (r[13] is None or str(r[13]) not in owners))
    ]
    return [RoiEvent(*r[:12]) for r in keep[:MAX_RUN_ROI_EVENTS]]
