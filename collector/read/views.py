"""Named views over the store: LLM calls, tool calls and cost records, each with its run.

Created at start next to the derived tables; they join `spans` (normalised at ingest),
`span_runs` (derived), GenAI log records (`logs`) and, for tool calls, MCP capture events
(`mcp_events`, origin 'mcp'), and are what queries and users read.
"""

from __future__ import annotations

import duckdb

from collector.store.lake import LAKE
from collector.store.writer import Store

# Message content sent as OTel log records (GenAI events) joined to the span they name.
_EVENT_CONTENT = """
SELECT org, trace_id, span_id,
       string_agg(coalesce(event_name, attributes->>'event.name') || ': ' || CAST(body AS VARCHAR),
                  chr(10) ORDER BY time_unix_nano) AS event_content
FROM {lake}.logs
WHERE span_id IS NOT NULL
  AND coalesce(event_name, attributes->>'event.name') LIKE 'gen_ai.%'
GROUP BY ALL
"""

# An MCP capture event joins a run only when its metadata names a trace the collector holds
# (metadata.trace_id): then it is a tool call of that trace's first run, and of its workflow.
_MCP_RUNS = """
SELECT org, trace_id, arg_min(run_id, started_at) AS run_id FROM {lake}.runs GROUP BY ALL
"""

# The MCP server an event's session named last (capture-session), as the call's service.
_MCP_SERVERS = """
SELECT org, session_id, arg_max(server_name, seq) AS server_name
FROM {lake}.mcp_sessions GROUP BY ALL
"""

VIEWS: dict[str, str] = {
    "llm_calls": """
SELECT s.org, r.run_id, s.trace_id, s.span_id, s.parent_span_id, s.name, s.service_name,
       s.model, s.request_model, s.response_model, s.provider,
       s.input_tokens, s.output_tokens, s.cache_read_tokens, s.cache_write_tokens,
       s.reasoning_tokens, s.usage_is_aggregate, s.cost_usd, s.cost_source, s.price_book_version,
       (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6 AS latency_ms,
       CASE WHEN s.is_error THEN 'error' ELSE 'success' END AS status, s.error_type,
       s.start_time_unix_nano, s.end_time_unix_nano, s.input_text, s.output_text,
       e.event_content
FROM {lake}.spans s
LEFT JOIN {lake}.span_runs r USING (org, trace_id, span_id)
LEFT JOIN ({events}) e USING (org, trace_id, span_id)
WHERE s.span_type = 'llm'
""",
    "tool_calls": """
SELECT s.org, r.run_id, s.trace_id, s.span_id, s.parent_span_id, s.name, s.service_name,
       s.tool_name, s.tool_call_id, s.tool_args, s.tool_result, NOT coalesce(s.is_error, false)
       AS success, s.error_type AS error,
       (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6 AS latency_ms,
       s.start_time_unix_nano, s.end_time_unix_nano, 'otlp' AS origin,
       NULL::VARCHAR AS session_id, NULL::VARCHAR AS primitive_type
FROM {lake}.spans s
LEFT JOIN {lake}.span_runs r USING (org, trace_id, span_id)
WHERE s.span_type = 'tool'
UNION ALL
SELECT e.org, r.run_id, e.trace_id, e.event_id, NULL, e.primitive_name, ms.server_name,
       e.primitive_name, NULL, e.args, e.result, e.success, e.error, e.latency_ms::DOUBLE,
       epoch_ns(e.started_at), epoch_ns(e.received_at), 'mcp', e.session_id, e.primitive_type
FROM {lake}.mcp_events e
LEFT JOIN ({mcp_runs}) r ON r.org = e.org AND r.trace_id = lower(e.trace_id)
LEFT JOIN ({mcp_servers}) ms ON ms.org = e.org AND ms.session_id = e.session_id
""",
    "cost_records": """
SELECT org, run_id, trace_id, span_id, model, provider, input_tokens, output_tokens,
       cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, cost_source,
       price_book_version, start_time_unix_nano
FROM {lake}.llm_calls
WHERE NOT coalesce(usage_is_aggregate, false)
""",
}


def create_views(store: Store) -> None:
    """Create (or replace) the views. They read the MCP capture tables, which the service
    creates before this (`collector/mcp/store.py`): the read side reads tables, it does not
    make another feature's."""

    def create(cur: duckdb.DuckDBPyConnection) -> None:
        parts = {
            "lake": LAKE,
            "events": _EVENT_CONTENT.format(lake=LAKE),
            "mcp_runs": _MCP_RUNS.format(lake=LAKE),
            "mcp_servers": _MCP_SERVERS.format(lake=LAKE),
        }
        for name, sql in VIEWS.items():
            body = sql.format(**parts)
            cur.execute(f"CREATE OR REPLACE VIEW {LAKE}.{name} AS {body}")

    store.call(create)
