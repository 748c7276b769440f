"""The store's tables: column names, Arrow types and the DuckDB DDL derived from them.

Decoders and processors fill these columns; the store creates and appends to these tables.
One definition serves all three, so a column is added in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from collector.model import Signal

_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    name: str
    arrow: pa.DataType
    sql: str
    doc: str = ""


def _c(name: str, arrow: pa.DataType, sql: str, doc: str = "") -> Column:
    return Column(name, arrow, sql, doc)


_STR, _I64, _I32, _F64, _BOOL = pa.string(), pa.int64(), pa.int32(), pa.float64(), pa.bool_()

SPAN_CORE: tuple[Column, ...] = (
    _c("org", _STR, "VARCHAR", "owning org"),
    _c("trace_id", _STR, "VARCHAR", "32 lowercase hex"),
    _c("span_id", _STR, "VARCHAR", "16 lowercase hex"),
    _c("parent_span_id", _STR, "VARCHAR", "16 hex, NULL for a root span"),
    _c("trace_state", _STR, "VARCHAR"),
    _c("flags", _I64, "BIGINT"),
    _c("name", _STR, "VARCHAR"),
    _c("kind", _I32, "INTEGER", "OTLP SpanKind number"),
    _c("start_time_unix_nano", _I64, "BIGINT"),
    _c("end_time_unix_nano", _I64, "BIGINT"),
    _c("status_code", _I32, "INTEGER", "0 unset, 1 ok, 2 error"),
    _c("status_message", _STR, "VARCHAR"),
    _c("service_name", _STR, "VARCHAR", "resource service.name"),
    _c("attributes", _STR, "JSON", "all span attributes"),
    _c("resource_attributes", _STR, "JSON"),
    _c("resource_schema_url", _STR, "VARCHAR"),
    _c("scope_name", _STR, "VARCHAR"),
    _c("scope_version", _STR, "VARCHAR"),
    _c("scope_attributes", _STR, "JSON"),
    _c("schema_url", _STR, "VARCHAR", "scope schema URL"),
    _c("events", _STR, "JSON", "[{name, time_unix_nano, attributes, dropped_attributes_count}]"),
    _c("links", _STR, "JSON", "[{trace_id, span_id, trace_state, attributes, flags}]"),
    _c("dropped_attributes_count", _I64, "BIGINT"),
    _c("dropped_events_count", _I64, "BIGINT"),
    _c("dropped_links_count", _I64, "BIGINT"),
    _c("received_at", _TS, "TIMESTAMPTZ", "when the collector received it"),
    _c("span_key", _I64, "BIGINT", "64-bit hash of (org, trace_id, span_id), for deduplication"),
)

# Filled by processors/normalise/span.py and processors/cost.py; NULL when a span says nothing.
SPAN_NORMALISED: tuple[Column, ...] = (
    _c("span_type", _STR, "VARCHAR", "agent | llm | tool | other"),
    _c("operation", _STR, "VARCHAR", "gen_ai operation name when known"),
    _c("agent_name", _STR, "VARCHAR", "workflow / agent name (agent spans)"),
    _c("run_id_external", _STR, "VARCHAR", "the framework's own run id"),
    _c("session_id", _STR, "VARCHAR"),
    _c("user_id", _STR, "VARCHAR"),
    _c("request_model", _STR, "VARCHAR"),
    _c("response_model", _STR, "VARCHAR"),
    _c("model", _STR, "VARCHAR", "response model, else request model"),
    _c("provider", _STR, "VARCHAR", "model vendor"),
    _c("input_tokens", _I64, "BIGINT", "all input tokens, cache reads and writes included"),
    _c("output_tokens", _I64, "BIGINT", "all output tokens, reasoning included"),
    _c("cache_read_tokens", _I64, "BIGINT"),
    _c("cache_write_tokens", _I64, "BIGINT"),
    _c("reasoning_tokens", _I64, "BIGINT"),
    _c("usage_is_aggregate", _BOOL, "BOOLEAN", "usage repeated from children (agent spans)"),
    _c("cost_usd", _F64, "DOUBLE"),
    _c("cost_source", _STR, "VARCHAR", "provided | computed | none (LLM and priced tool spans)"),
    _c("price_book_version", _STR, "VARCHAR"),
    _c("tool_name", _STR, "VARCHAR"),
    _c("tool_call_id", _STR, "VARCHAR"),
    _c("tool_args", _STR, "VARCHAR"),
    _c("tool_result", _STR, "VARCHAR"),
    _c("error_type", _STR, "VARCHAR"),
    _c("is_error", _BOOL, "BOOLEAN"),
    _c("input_text", _STR, "VARCHAR", "input excerpt"),
    _c("output_text", _STR, "VARCHAR", "output excerpt"),
    # Where a computed cost's price came from (processors/cost.py); added after the first
    # release, so kept last (older stores gain them by ALTER TABLE, which appends).
    _c(
        "price_source",
        _STR,
        "VARCHAR",
        "override:org | override | operator | agentledger | genai-prices | tool-config[:org]",
    ),
    _c("price_effective_from", _STR, "VARCHAR", "first day (UTC) of the price applied, if dated"),
    _c("price_mode", _STR, "VARCHAR", "service tier or batch price applied (NULL: standard)"),
)

LOG_COLUMNS: tuple[Column, ...] = (
    _c("org", _STR, "VARCHAR"),
    _c("time_unix_nano", _I64, "BIGINT"),
    _c("observed_time_unix_nano", _I64, "BIGINT"),
    _c("trace_id", _STR, "VARCHAR"),
    _c("span_id", _STR, "VARCHAR"),
    _c("flags", _I64, "BIGINT"),
    _c("severity_number", _I32, "INTEGER"),
    _c("severity_text", _STR, "VARCHAR"),
    _c("event_name", _STR, "VARCHAR"),
    _c("body", _STR, "JSON"),
    _c("attributes", _STR, "JSON"),
    _c("service_name", _STR, "VARCHAR"),
    _c("resource_attributes", _STR, "JSON"),
    _c("resource_schema_url", _STR, "VARCHAR"),
    _c("scope_name", _STR, "VARCHAR"),
    _c("scope_version", _STR, "VARCHAR"),
    _c("scope_attributes", _STR, "JSON"),
    _c("dropped_attributes_count", _I64, "BIGINT"),
    _c("received_at", _TS, "TIMESTAMPTZ"),
)

METRIC_COLUMNS: tuple[Column, ...] = (
    _c("org", _STR, "VARCHAR"),
    _c("metric_name", _STR, "VARCHAR"),
    _c("description", _STR, "VARCHAR"),
    _c("unit", _STR, "VARCHAR"),
    _c("metric_type", _STR, "VARCHAR", "gauge | sum | histogram | exponential_histogram | summary"),
    _c("start_time_unix_nano", _I64, "BIGINT"),
    _c("time_unix_nano", _I64, "BIGINT"),
    _c("value", _F64, "DOUBLE", "gauge/sum value; histogram/summary sum"),
    _c("count", _I64, "BIGINT", "histogram/summary count"),
    _c("is_monotonic", _BOOL, "BOOLEAN"),
    _c("aggregation_temporality", _I32, "INTEGER"),
    _c("point", _STR, "JSON", "the whole data point (buckets, quantiles, exemplars)"),
    _c("attributes", _STR, "JSON"),
    _c("service_name", _STR, "VARCHAR"),
    _c("resource_attributes", _STR, "JSON"),
    _c("scope_name", _STR, "VARCHAR"),
    _c("scope_version", _STR, "VARCHAR"),
    _c("received_at", _TS, "TIMESTAMPTZ"),
)

TABLES: dict[Signal, tuple[Column, ...]] = {
    Signal.TRACES: SPAN_CORE + SPAN_NORMALISED,
    Signal.LOGS: LOG_COLUMNS,
    Signal.METRICS: METRIC_COLUMNS,
}


def arrow_schema(signal: Signal) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow) for c in TABLES[signal]])


def missing_columns(signal: Signal, have: set[str]) -> list[Column]:
    """Columns of a signal's table added to the schema since a stored table was created."""
    return [c for c in TABLES[signal] if c.name not in have]


def create_table_sql(signal: Signal) -> str:
    cols = ",\n  ".join(f"{c.name} {c.sql}" for c in TABLES[signal])
    return f"CREATE TABLE IF NOT EXISTS {signal.value} (\n  {cols}\n)"


def column_names(signal: Signal) -> list[str]:
    return [c.name for c in TABLES[signal]]


def to_table(signal: Signal, columns: dict[str, list[object]], n: int) -> pa.Table:
    """An Arrow table in the store schema from column lists; absent columns are all NULL."""
    schema = arrow_schema(signal)
    arrays = [
        pa.array(columns[f.name], type=f.type) if f.name in columns else pa.nulls(n, type=f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


# Tables derived from committed spans by `collector/runs/derive.py` (not written by ingest): one row
# per run, and which run each span belongs to. Recomputed a whole trace at a time.
RUN_COLUMNS: tuple[Column, ...] = (
    _c("org", _STR, "VARCHAR", "owning org"),
    _c("run_id", _STR, "VARCHAR", "run span trace_id + span_id (48 hex)"),
    _c("trace_id", _STR, "VARCHAR"),
    _c("span_id", _STR, "VARCHAR", "the run span"),
    _c("parent_run_id", _STR, "VARCHAR", "nearest ancestor run, else the run a link points into"),
    _c("workflow_name", _STR, "VARCHAR", "agent name, else run span name, else service.name"),
    _c("run_id_external", _STR, "VARCHAR"),
    _c("status", _STR, "VARCHAR", "running | success | error | loop_detected | timeout"),
    _c("started_at", _TS, "TIMESTAMPTZ"),
    _c("ended_at", _TS, "TIMESTAMPTZ", "NULL while running"),
    _c("duration_ms", _I64, "BIGINT", "NULL while running"),
    _c(
        "cost_usd",
        _F64,
        "DOUBLE",
        "known cost of the run's own LLM and tool calls (not child runs)",
    ),
    _c("cost_unknown_calls", _I32, "INTEGER", "LLM calls with no known cost"),
    _c("input_tokens", _I64, "BIGINT"),
    _c("output_tokens", _I64, "BIGINT"),
    _c("cache_read_tokens", _I64, "BIGINT"),
    _c("cache_write_tokens", _I64, "BIGINT"),
    _c("reasoning_tokens", _I64, "BIGINT"),
    _c("total_tokens", _I64, "BIGINT", "input + output"),
    _c("llm_call_count", _I32, "INTEGER"),
    _c("tool_use_count", _I32, "INTEGER"),
    _c("error_count", _I32, "INTEGER", "failed spans of the run"),
    _c("session_id", _STR, "VARCHAR"),
    _c("user_id", _STR, "VARCHAR"),
    _c("input_excerpt", _STR, "VARCHAR"),
    _c("output_excerpt", _STR, "VARCHAR"),
    _c("error_type", _STR, "VARCHAR"),
    _c("service_name", _STR, "VARCHAR"),
    _c("loop_detail", _STR, "VARCHAR", "what repeated, when a loop was detected"),
    _c("link_trace_id", _STR, "VARCHAR", "trace the run span's first link points into"),
    _c("last_span_at", _TS, "TIMESTAMPTZ", "latest arrival of a span of the run"),
    _c("updated_at", _TS, "TIMESTAMPTZ", "when this row was derived"),
    # Integer twins of the ids, so a lookup by id compares 8-byte integers instead of 48-char
    # strings over every run; added after the first release, so kept last (ALTER TABLE order).
    _c("run_key", _I64, "BIGINT", "collector.store.dedup.run_key of run_id"),
    _c("parent_run_key", _I64, "BIGINT", "collector.store.dedup.run_key of parent_run_id"),
    # The run's detail picks its calls from the trace's spans by these ids, sparing a lookup
    # in `span_runs` (~15% of its time at 1M runs); NULL for runs derived before the column,
    # or with too many to list. Raw 8-byte ids in one BLOB: half the size of hex, and a
    # lookup decodes the column for a whole row group, where a Parquet list decodes slowly.
    _c(
        "call_span_ids",
        pa.binary(),
        "BLOB",
        "the run's LLM and tool span ids (as in span_runs), 8 raw bytes each, by start",
    ),
    _c("tool_cost_usd", _F64, "DOUBLE", "the part of cost_usd its priced tool calls cost"),
)

SPAN_RUN_COLUMNS: tuple[Column, ...] = (
    _c("org", _STR, "VARCHAR"),
    _c("trace_id", _STR, "VARCHAR"),
    _c("span_id", _STR, "VARCHAR"),
    _c("run_id", _STR, "VARCHAR", "the nearest ancestor run of the span"),
    _c("span_type", _STR, "VARCHAR", "agent | llm | tool | other"),
    _c("start_time_unix_nano", _I64, "BIGINT", "the span's start, so scans prune like spans"),
)

# One row per tool span a run owns (as its `span_runs` rows of type tool), with the run's
# workflow and start: a workflow's tool breakdown reads these rows alone, pruned by workflow,
# where reading the tool spans of a busy workflow's runs meant scanning `spans` whole.
RUN_TOOL_COLUMNS: tuple[Column, ...] = (
    _c("org", _STR, "VARCHAR"),
    _c("workflow_name", _STR, "VARCHAR", "the run's"),
    _c("started_at", _TS, "TIMESTAMPTZ", "the run's start: the window a call counts in"),
    _c("trace_id", _STR, "VARCHAR"),
    _c("run_id", _STR, "VARCHAR"),
    _c("tool", _STR, "VARCHAR", "tool_name, else the span's name"),
    _c("failed", _BOOL, "BOOLEAN", "is_error, or status ERROR"),
    _c("latency_ms", _F64, "DOUBLE", "end - start"),
    _c("first_of_tool", _BOOL, "BOOLEAN", "the run's first call of this tool: counts runs"),
)

DERIVED_TABLES: dict[str, tuple[Column, ...]] = {
    "runs": RUN_COLUMNS,
    "span_runs": SPAN_RUN_COLUMNS,
    "run_tools": RUN_TOOL_COLUMNS,
}


def create_derived_sql(name: str) -> str:
    cols = ",\n  ".join(f"{c.name} {c.sql}" for c in DERIVED_TABLES[name])
    return f"CREATE TABLE IF NOT EXISTS {name} (\n  {cols}\n)"


def derived_arrow_schema(name: str) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow) for c in DERIVED_TABLES[name]])
