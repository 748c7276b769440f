"""Rows of the derived tables (`runs`, `span_runs`, `run_tools`) and the span facts read from
`spans`: the data types run assembly (`runs.py`) takes in and gives out, and how a row packs them.
Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from processors.runs.tree import STATUS_ERROR, SpanFacts

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The read API's run detail shows up to 1,000 LLM calls and 1,000 tool events; a run with more
# spans than both is rare, and its detail finds them in `span_runs` instead.
MAX_LISTED_CALLS = 2000

SPAN_FACT_FIELDS: tuple[str, ...] = SpanFacts._fields
_FIELD_SET = frozenset(SPAN_FACT_FIELDS) - {"links", "received_ns"}


@dataclass(frozen=True)
class RunRow:
    """One row of the `runs` table (`collector.store.schema.RUN_COLUMNS`)."""

    org: str
    run_id: str
    trace_id: str
    span_id: str
    parent_run_id: str | None
    workflow_name: str | None
    run_id_external: str | None
    status: str
    started_at: datetime
    ended_at: datetime | None
    duration_ms: int | None
    cost_usd: float
    cost_unknown_calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    total_tokens: int
    llm_call_count: int
    tool_use_count: int
    error_count: int
    session_id: str | None
    user_id: str | None
    input_excerpt: str | None
    output_excerpt: str | None
    error_type: str | None
    service_name: str | None
    loop_detail: str | None
    link_trace_id: str | None
    last_span_at: datetime
    updated_at: datetime
    # Ids of the run's own LLM and tool spans in start order (its `span_runs` rows of those
    # types), 8 raw bytes each; None when there are more than MAX_LISTED_CALLS (a row stays
    # small) or an id is not 16 hex digits.
    call_span_ids: bytes | None = None
    tool_cost_usd: float = 0.0  # the part of cost_usd its priced tool calls cost


class SpanRun(NamedTuple):
    """One row of the `span_runs` table: the run a span belongs to (a tuple: one a span)."""

    org: str
    trace_id: str
    span_id: str
    run_id: str
    span_type: str | None
    start_time_unix_nano: int


class RunTool(NamedTuple):
    """One row of the `run_tools` table: a tool span a run owns, with the run's workflow and
    start (`collector.store.schema.RUN_TOOL_COLUMNS`)."""

    org: str
    workflow_name: str | None
    started_at: datetime
    trace_id: str
    run_id: str
    tool: str
    failed: bool
    latency_ms: float
    first_of_tool: bool


def run_tools(run: RunRow, members: Sequence[SpanFacts]) -> list[RunTool]:
    """The `run_tools` rows of a run from its member spans (its `span_runs`), sorted by start:
    each tool span, named by `tool_name` else its span name; the first call of each tool is
    marked, so runs using a tool are counted without a DISTINCT over run ids."""
    seen: set[str] = set()
    out = []
    for s in members:
        if s.span_type != "tool":
            continue
        tool = s.name if s.tool_name is None else s.tool_name
        out.append(
            RunTool(
                run.org,
                run.workflow_name,
                run.started_at,
                run.trace_id,
                run.run_id,
                tool,
                bool(s.is_error) or s.status_code == STATUS_ERROR,
                (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6,
                tool not in seen,
            )
        )
        seen.add(tool)
    return out


@dataclass(frozen=True)
class TraceRuns:
    """A trace's runs (sorted by run id), span assignments (sorted by span id) and the runs'
    tool calls (by run, then start)."""

    runs: tuple[RunRow, ...] = ()
    span_runs: tuple[SpanRun, ...] = ()
    run_tools: tuple[RunTool, ...] = ()


def facts_of(table: pa.Table) -> list[SpanFacts]:
    """`span_facts` of every row of a table of `spans` columns, made column by column."""
    defaults = SpanFacts._field_defaults
    columns: list[list[Any]] = []
    for name in SPAN_FACT_FIELDS:
        if name == "received_ns":
            if "received_at" not in table.column_names:
                columns.append([None] * table.num_rows)
                continue
            micros = pc.cast(table["received_at"], pa.int64())
            columns.append(pc.multiply(micros, 1000).to_pylist())
        elif name == "links":
            columns.append([_links(v) for v in table["links"].to_pylist()])
        elif name in table.column_names:
            column = table[name]
            default = defaults.get(name)
            if default is not None and column.null_count:
                column = pc.fill_null(column, default)
            columns.append(column.to_pylist())
        else:
            columns.append([defaults.get(name)] * table.num_rows)
    make = tuple.__new__
    return [make(SpanFacts, row) for row in zip(*columns, strict=True)]


def span_facts(row: Mapping[str, Any]) -> SpanFacts:
    """A `SpanFacts` from a `spans` row: links JSON parsed, `received_at` in ns, NULLs defaulted."""
    values = {k: v for k, v in row.items() if v is not None and k in _FIELD_SET}
    received = row.get("received_at")
    if isinstance(received, datetime):
        values["received_ns"] = to_epoch_ns(received)
    values["links"] = _links(row.get("links"))
    return SpanFacts(**values)


def _links(raw: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(raw, tuple):
        return raw
    if not raw or raw == "[]":
        return ()
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return ()
    return tuple(
        (str(link["trace_id"]), str(link["span_id"]))
        for link in parsed
        if isinstance(link, dict) and link.get("trace_id") and link.get("span_id")
    )


def to_epoch_ns(t: datetime) -> int:
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def from_epoch_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(
        microsecond=(ns // 1000) % 1_000_000
    )


def pack_call_ids(members: Sequence[SpanFacts]) -> bytes | None:
    """`RunRow.call_span_ids` of a run's members (sorted by start): the ids of its LLM and tool
    spans (OTLP's 8 bytes, hex-encoded at decode) packed back into bytes; None unless every id
    is 16 lowercase hex digits, which the reader's `bytes.hex()` gives back exactly."""
    ids = [s.span_id for s in members if s.span_type in ("llm", "tool")]
    if len(ids) > MAX_LISTED_CALLS:
        return None
    packed = []
    for span_id in ids:
        try:
            raw = bytes.fromhex(span_id)
        except ValueError:
            return None
        if len(raw) != 8 or raw.hex() != span_id:
            return None
        packed.append(raw)
    return b"".join(packed)
