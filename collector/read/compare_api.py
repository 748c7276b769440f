"""`GET /api/runs/compare?run_a=&run_b=`: two runs of one workflow side by side (`ReadApi`
includes it before `/api/runs/{run_id}`). Gated by the org setting `compare_enabled`.
"""

from __future__ import annotations

from typing import Any

from collector.api import shapes as js
from collector.api.params import Params
from collector.auth.settings import PerOrgSettings
from collector.errors import ApiError
from collector.model import Principal
from collector.read import compare as qc
from collector.read import shapes as rs
from collector.store.writer import Store

_MAX_ID_LENGTH = 200  # run ids are 48 hex; anything far longer is not worth a query


class CompareApi:
    def __init__(self, store: Store, org_settings: PerOrgSettings) -> None:
        self._store = store
        self._org_settings = org_settings

    def compare(self, p: Principal, q: Params, _: dict[str, str]) -> dict[str, Any]:
        # The gate first: an org without the feature learns that, not which params it missed.
        # Read now, not cached: a rare route, and a change takes effect at once.
        if not qc.compare_enabled(self._org_settings.document_now(p.org)):
            raise ApiError(
                403, "plan_required", "Run comparison is not enabled for this organization"
            )
        run_a, run_b = _run_id(q, "run_a"), _run_id(q, "run_b")
        q.raise_if_invalid()
        rows = qc.load_runs(self._store, p.org, run_a, run_b)
        missing = [name for name, rid in (("run_a", run_a), ("run_b", run_b)) if rid not in rows]
        if missing:
            # One message for missing and foreign alike: another org's run ids are not leaked.
            raise ApiError(404, "not_found", f"Run not found: {', '.join(missing)}")
        row_a, row_b = rows[run_a], rows[run_b]
        if row_a[1] != row_b[1]:
            raise ApiError(
                422,
                "workflow_mismatch",
                "Only runs of the same workflow can be compared",
                [{"field": "run_b", "message": f"is a run of {row_b[1]!r}, not {row_a[1]!r}"}],
            )
        return comparison(qc.compare_runs(self._store, p.org, row_a, row_b))


def _run_id(q: Params, name: str) -> str:
    raw = q.query.get(name) or ""
    if not raw:
        q.problem(name, "is required")
    elif len(raw) > _MAX_ID_LENGTH:
        q.problem(name, "is not a run id")
    return raw


# -- JSON ----------------------------------------------------------------------------------


def comparison(c: qc.Comparison) -> dict[str, Any]:
    a, b = c.a.summary, c.b.summary
    return {
        "workflow_name": a.workflow_name,
        "run_a": rs.run_summary(a),
        "run_b": rs.run_summary(b),
        "totals": {
            "cost_usd": _money(a.cost_usd or 0.0, b.cost_usd or 0.0),
            "total_tokens": _count(a.total_tokens or 0, b.total_tokens or 0),
            "input_tokens": _count(c.a.input_tokens, c.b.input_tokens),
            "output_tokens": _count(c.a.output_tokens, c.b.output_tokens),
            "duration_ms": _count(a.duration_ms, b.duration_ms),
            "llm_call_count": _count(a.llm_call_count or 0, b.llm_call_count or 0),
            "tool_use_count": _count(a.tool_use_count or 0, b.tool_use_count or 0),
        },
        "steps": [_pair(i, s) for i, s in enumerate(c.steps)],
        "tools": _tools(c.tools),
    }


def _money(a: float | None, b: float | None) -> dict[str, Any]:
    delta = None if a is None or b is None else js.usd(b - a)
    return {
        "a": None if a is None else js.usd(a),
        "b": None if b is None else js.usd(b),
        "delta": delta,
    }


def _count(a: float | None, b: float | None) -> dict[str, Any]:
    # delta is b - a: positive means run B used more; null when either side is unknown.
    delta = None if a is None or b is None else round(b - a, 3)
    return {"a": a, "b": b, "delta": delta}


def _step(s: qc.Step | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "id": s.span_id,
        "name": s.name,
        "model": s.model,
        "offset_ms": s.offset_ms,
        "duration_ms": s.duration_ms,
        "input_tokens": s.input_tokens,
        "output_tokens": s.output_tokens,
        "total_tokens": s.input_tokens + s.output_tokens,
        # Unknown cost stays null, as in run detail: never read as a free call.
        "cost_usd": None if s.cost_usd is None else js.usd(s.cost_usd),
        "status": "error" if s.failed else "success",
    }


def _pair(index: int, p: qc.StepPair) -> dict[str, Any]:
    a, b = p.a, p.b
    both = a is not None and b is not None
    cost = None
    if a is not None and b is not None and a.cost_usd is not None and b.cost_usd is not None:
        cost = js.usd(b.cost_usd - a.cost_usd)
    duration = None
    if a is not None and b is not None and a.duration_ms is not None and b.duration_ms is not None:
        duration = round(b.duration_ms - a.duration_ms, 3)
    tokens = None
    if a is not None and b is not None:
        tokens = (b.input_tokens + b.output_tokens) - (a.input_tokens + a.output_tokens)
    return {
        "index": index,
        "kind": p.kind,
        "name": p.name,
        "match": "both" if both else ("only_a" if a is not None else "only_b"),
        "a": _step(a),
        "b": _step(b),
        "duration_delta_ms": duration,
        "total_tokens_delta": tokens,
        "cost_delta_usd": cost,
    }


def _tools(t: qc.ToolDiff) -> dict[str, Any]:
    return {
        "sequence_a": t.sequence_a,
        "sequence_b": t.sequence_b,
        "edit_script": [
            {
                "op": e.op,
                "a_start": e.a_start,
                "a_end": e.a_end,
                "b_start": e.b_start,
                "b_end": e.b_end,
                "a": t.sequence_a[e.a_start : e.a_end],
                "b": t.sequence_b[e.b_start : e.b_end],
            }
            for e in t.edits
        ],
        "edit_distance": t.distance,
        "added": t.added,
        "removed": t.removed,
        "reordered": t.reordered,
        "identical": t.sequence_a == t.sequence_b,
    }
