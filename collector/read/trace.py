"""A run's trace as the spans the web UI's waterfall draws: every span of the trace in the run's
time window with its parent, kind, usage, cost, tool call and input/output excerpts.

One parametrised, capped query over `spans` (the run detail reads only LLM and tool spans, and
no parents or excerpts); `collector/ui/waterfall.py` lays the result out on a time axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.store.query import fetch
from collector.store.readers import Reads

MAX_TRACE_SPANS = 2000
EXCERPT_CHARS = 2000
_SKEW_NS = 3600 * 1_000_000_000  # as the run detail: an hour either side for clock skew

_TRACE_SQL = """SELECT span_id, parent_span_id, name, span_type, agent_name, model, provider,
    input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
    cost_usd, cost_source, tool_name, tool_call_id,
    substr(tool_args, 1, $chars), substr(tool_result, 1, $chars),
    coalesce(is_error, false) OR coalesce(status_code = 2, false) AS failed,
    coalesce(error_type, nullif(status_message, '')) AS error,
    start_time_unix_nano, end_time_unix_nano,
    substr(input_text, 1, $chars), substr(output_text, 1, $chars)
    FROM spans
    WHERE org = $org AND trace_id = $trace_id AND start_time_unix_nano BETWEEN $lo AND $hi
    ORDER BY start_time_unix_nano, span_id
    LIMIT $limit"""


@dataclass(frozen=True)
class TraceSpan:
    span_id: str
    parent_span_id: str | None
    name: str | None
    span_type: str | None  # agent | llm | tool | other
    agent_name: str | None
    model: str | None
    provider: str | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    cost_source: str | None
    tool_name: str | None
    tool_call_id: str | None
    tool_args: str | None
    tool_result: str | None
    failed: bool
    error: str | None
    start_ns: int
    end_ns: int | None
    input_text: str | None
    output_text: str | None


@dataclass(frozen=True)
class Trace:
    spans: list[TraceSpan]
    truncated: bool  # the trace had more than MAX_TRACE_SPANS spans in the window


def run_trace(store: Reads, org: str, trace_id: str, start_ns: int, end_ns: int | None) -> Trace:
    """The spans of `org`'s trace `trace_id` that start within [start_ns, end_ns] (an hour of
    skew either side), oldest first, at most MAX_TRACE_SPANS; excerpts cut to EXCERPT_CHARS."""
    params: dict[str, Any] = {
        "org": org,
        "trace_id": trace_id,
        "lo": start_ns - _SKEW_NS,
        "hi": (end_ns if end_ns is not None else start_ns) + _SKEW_NS,
        "chars": EXCERPT_CHARS,
        "limit": MAX_TRACE_SPANS + 1,
    }
    rows = fetch(store, _TRACE_SQL, params)
    spans = [TraceSpan(*r) for r in rows[:MAX_TRACE_SPANS]]
    return Trace(spans, len(rows) > MAX_TRACE_SPANS)
