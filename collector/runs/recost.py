"""Run totals brought in line with re-priced calls (`agentledger prices recompute`).

The traces whose LLM or tool calls were re-priced are re-assembled from their stored spans by
the run assembler `derive.py` uses, and the cost columns of their stored runs are written in
the caller's transaction; the rest of a run row stays the deriver's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from collector.runs.derive import trace_spans
from collector.store.lake import LAKE
from processors.runs.assemble import RunsConfig, RunsProcessor

_NS = 1_000_000_000


class RunTotals:
    """Re-derives `cost_usd`, `tool_cost_usd` and `cost_unknown_calls` of stored runs (what the
    run list, the run detail, workflow figures, cost alerts and ROI of traced runs read)."""

    def __init__(self, config: RunsConfig) -> None:
        self._assembler = RunsProcessor(config)
        self._widen = config.max_trace_duration_s * _NS

    def update(
        self,
        cur: duckdb.DuckDBPyConnection,
        org: str,
        traces: Mapping[str, tuple[int, int]],
        now_ns: int | None = None,
    ) -> int:
        """Re-derive the runs of these traces of `org` (trace id → its re-priced calls'
        earliest and latest start); returns how many stored runs changed."""
        if not traces:
            return 0
        now_ns = now_ns or time.time_ns()
        lo = min(w[0] for w in traces.values()) - self._widen
        hi = max(w[1] for w in traces.values()) + self._widen
        cols = ", ".join(self._assembler.columns)
        by_trace: dict[str, list[dict[str, object]]] = {}
        for span in trace_spans(cur, cols, org, list(traces), (lo, hi)).to_pylist():
            by_trace.setdefault(str(span["trace_id"]), []).append(span)
        derived = [
            run
            for spans in by_trace.values()
            for run in self._assembler.assemble(spans, now_ns, [])["runs"]
        ]
        if not derived or not _derived_yet(cur):
            return 0
        totals = pa.table(
            {
                "org": [r["org"] for r in derived],
                "run_id": [r["run_id"] for r in derived],
                "cost_usd": pa.array([r["cost_usd"] for r in derived], pa.float64()),
                "tool_cost_usd": pa.array([r["tool_cost_usd"] for r in derived], pa.float64()),
                "unknown": pa.array([r["cost_unknown_calls"] for r in derived], pa.int32()),
            }
        )
        cur.register("_totals", totals)
        try:
            changed = cur.execute(
                """UPDATE runs SET cost_usd = t.cost_usd, tool_cost_usd = t.tool_cost_usd,
                       cost_unknown_calls = t.unknown, updated_at = ?
                   FROM _totals t
                   WHERE runs.org = t.org AND runs.run_id = t.run_id
                     AND (runs.cost_usd IS DISTINCT FROM t.cost_usd
                          OR coalesce(runs.tool_cost_usd, 0.0) IS DISTINCT FROM t.tool_cost_usd
                          OR runs.cost_unknown_calls IS DISTINCT FROM t.unknown)""",
                [datetime.fromtimestamp(now_ns / _NS, UTC)],
            ).fetchone()
        finally:
            cur.unregister("_totals")
        return int(changed[0]) if changed else 0


def _derived_yet(cur: duckdb.DuckDBPyConnection) -> bool:
    """Whether the store has a `runs` table (a server has started on it since it was made)."""
    row = cur.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' "
        "AND table_name = 'runs'",
        [LAKE],
    ).fetchone()
    return bool(row and row[0])
