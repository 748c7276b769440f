"""The ROI events of one run, for its detail in the read API: events linked by run id, or by
trace and pinned to the run through `span_runs`; read from `roi_events` (`collector/roi_*.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from collector.read.runs import RunDetail
from collector.store.query import fetch
from collector.store.readers import Reads

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


def run_roi(store: Reads, org: str, detail: RunDetail) -> list[RoiEvent]:
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
