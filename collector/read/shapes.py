"""How the read API writes its objects (the Trakr dashboard API doc): runs, LLM calls, tool events,
run detail, workflows, buckets, tools, the overview and a run's ROI, from the query layer's records.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from collector.api.shapes import ms, number, rfc3339, usd
from collector.read.detail import RoiEvent
from collector.read.metrics import Bucket, Overview, ToolStats, Totals, WorkflowSummary
from collector.read.runs import LlmCall, Price, RunDetail, RunSummary, ToolEvent


def run_summary(r: RunSummary) -> dict[str, Any]:
    return {
        "id": r.id,
        "workflow_name": r.workflow_name,
        "run_id_external": r.run_id_external,
        "status": r.status,
        "cost_usd": usd(r.cost_usd),
        "total_tokens": r.total_tokens or 0,
        "duration_ms": r.duration_ms,
        "llm_call_count": r.llm_call_count or 0,
        "tool_use_count": r.tool_use_count or 0,
        "started_at": rfc3339(r.started_at_us),
        "ended_at": rfc3339(r.ended_at_us),
    }


def llm_call(c: LlmCall) -> dict[str, Any]:
    return {
        "id": c.span_id,
        "name": c.name,
        "model": c.model,
        "provider": c.provider,
        "input_tokens": c.input_tokens or 0,
        "output_tokens": c.output_tokens or 0,
        "cache_read_tokens": c.cache_read_tokens or 0,
        "cache_write_tokens": c.cache_write_tokens or 0,
        "reasoning_tokens": c.reasoning_tokens or 0,
        "total_tokens": (c.input_tokens or 0) + (c.output_tokens or 0),
        # Unknown stays null (see cost_source), so it never reads as a free call.
        "cost_usd": None if c.cost_usd is None else usd(c.cost_usd),
        "cost_source": c.cost_source,
        "price": price(c.price),
        "latency_ms": ms(c.start_ns, c.end_ns),
        "status": "error" if c.failed else "success",
        "error": c.error if c.failed else None,
        "started_at": rfc3339(c.start_ns // 1000),
    }


def tool_event(t: ToolEvent) -> dict[str, Any]:
    return {
        "id": t.span_id,
        "tool_name": t.tool_name,
        "tool_call_id": t.tool_call_id,
        "args": t.tool_args,
        "result": t.tool_result,
        "success": not t.failed,
        "latency_ms": ms(t.start_ns, t.end_ns),
        "error": t.error if t.failed else None,
        "started_at": rfc3339(t.start_ns // 1000),
        # Null unless the tool is priced (processors.cost.tools): unknown is never $0.
        "cost_usd": None if t.cost_usd is None else usd(t.cost_usd),
        "cost_source": t.cost_source,
        "price": price(t.price),
    }


def price(p: Price | None) -> dict[str, Any] | None:
    """Where a computed cost's price came from; null for a cost not computed here."""
    if p is None:
        return None
    return {
        "source": p.source,
        "version": p.version,
        "effective_from": p.effective_from,
        "mode": p.mode,
    }


def run_detail(d: RunDetail, alert_events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    run = run_summary(d.summary)
    run.update(d.extra)
    # cost_usd is the LLM calls' and the priced tool calls' together; shown apart here.
    tools = float(d.extra.get("tool_cost_usd") or 0.0)
    run["tool_cost_usd"] = usd(tools)
    run["llm_cost_usd"] = usd(max((d.summary.cost_usd or 0.0) - tools, 0.0))
    run["llm_calls"] = [llm_call(c) for c in d.llm_calls]
    run["tool_events"] = [tool_event(t) for t in d.tool_events]
    return {
        "run": run,
        "child_runs": [run_summary(c) for c in d.child_runs],
        "child_run_count": d.child_run_count,
        "combined_cost_usd": usd(d.combined_cost_usd),
        "alert_events": alert_events or [],  # the newest five (collector/read/alerts.py)
    }


def workflow(w: WorkflowSummary) -> dict[str, Any]:
    return {
        "workflow_name": w.workflow_name,
        "run_count": w.run_count,
        "avg_cost_usd": usd(w.avg_cost_usd),
        "p95_cost_usd": usd(w.p95_cost_usd),
        "total_cost_usd": usd(w.total_cost_usd),
        "error_rate": round(float(w.error_rate), 6),
        # The doc types it as a number: 0 when no run of the window has finished yet.
        "avg_duration_ms": number(w.avg_duration_ms) or 0,
        "last_run_at": rfc3339(w.last_run_us),
    }


def bucket(b: Bucket) -> dict[str, Any]:
    return {
        "time": rfc3339(b.start_us),
        "runs": b.runs,
        "errors": b.errors,
        "cost_usd": usd(b.cost_usd),
        "tokens": int(b.tokens or 0),
        "p50_duration_ms": number(b.p50_duration_ms),
        "p95_duration_ms": number(b.p95_duration_ms),
    }


def tool(t: ToolStats) -> dict[str, Any]:
    return {
        "tool_name": t.tool_name,
        "calls": t.calls,
        "error_rate": round(t.error_rate, 6),
        "p50_latency_ms": number(t.p50_latency_ms),
        "p95_latency_ms": number(t.p95_latency_ms),
        "runs_using": t.runs_using,
        "run_share": round(t.run_share, 6),
    }


def _totals(t: Totals) -> dict[str, Any]:
    return {
        "run_count": t.runs,
        "cost_usd": usd(t.cost_usd),
        "total_tokens": t.tokens,
        "error_count": t.errors,
        "error_rate": round(t.error_rate, 6),
        "llm_call_count": t.llm_calls,
        "tool_use_count": t.tool_calls,
    }


def _change(now: float, before: float) -> float | None:
    """Relative change against the previous window (0.25 = +25%); null when it had none."""
    return round((now - before) / before, 6) if before else None


def overview(o: Overview) -> dict[str, Any]:
    cur, prev = o.totals, o.previous
    return {
        "totals": _totals(cur),
        "previous": _totals(prev),
        "change": {
            "run_count": _change(cur.runs, prev.runs),
            "cost_usd": _change(cur.cost_usd, prev.cost_usd),
            "total_tokens": _change(cur.tokens, prev.tokens),
            "error_rate": _change(cur.error_rate, prev.error_rate),
            "llm_call_count": _change(cur.llm_calls, prev.llm_calls),
            "tool_use_count": _change(cur.tool_calls, prev.tool_calls),
        },
        "top_workflows": [
            {"workflow_name": name, "cost_usd": usd(cost), "run_count": n}
            for name, cost, n in o.top_workflows
        ],
        "top_models": [
            {"model": m, "cost_usd": usd(cost), "llm_call_count": n, "total_tokens": tokens}
            for m, cost, n, tokens in o.top_models
        ],
    }


def _sum(values: list[float], places: str) -> float:
    # Decimal from repr: 0.066 + 0.033 is 0.099, not 0.09900000000000001.
    return float(
        sum((Decimal(repr(float(v))) for v in values), Decimal(0)).quantize(Decimal(places))
    )


def run_roi(events: list[RoiEvent]) -> dict[str, Any]:
    """What a run saved: its linked ROI events and their sums. Money adds up only within one
    currency: with events in several, the money sums and `currency` are null."""
    currencies = {e.currency for e in events}
    one = len(currencies) <= 1
    return {
        "events": [
            {
                "event_id": e.event_id,
                "source": "traced_run" if e.traced else "track",
                "agent_id": e.agent_id,
                "task_type": e.task_type,
                "outcome": e.outcome,
                "hours_saved": e.hours_saved,
                "cost_saved": e.cost_saved,
                "agent_cost": e.agent_cost,
                "resolved_cost_source": e.cost_source,
                "net_saved": e.net_saved,
                "currency": e.currency,
                "occurred_at": rfc3339(e.occurred_at_us),
            }
            for e in events
        ],
        "hours_saved": _sum([e.hours_saved for e in events], "0.001"),
        "cost_saved": _sum([e.cost_saved for e in events], "0.01") if one else None,
        "net_saved": _sum([e.net_saved for e in events], "0.000001") if one else None,
        "currency": next(iter(currencies), None) if one else None,
    }
