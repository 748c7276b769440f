"""Named queries over derived runs: the filtered, keyset-paged run list and one run's detail.

Reads `runs` and `span_runs` (filled by `collector/runs/derive.py`) joined to `spans`; every query
is parametrised SQL scoped by org, with a row cap; the read API serialises the results.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from collector.store.keys import run_key
from collector.store.query import MAX_CHILD_RUNS, MAX_DETAIL_SPANS, Window, fetch
from collector.store.readers import Reads

_BIGINT_MAX = 9_223_372_036_854_775_807


@dataclass(frozen=True)
class Sort:
    """A run-list order: a single-valued key expression (NULLs mapped so that they sort last)
    and its direction; ties are broken by run_id in the same direction."""

    key_sql: str
    key_type: str  # "BIGINT" or "DOUBLE": what a cursor's key must be
    desc: bool


# The key expressions are constants; user input only picks one of them by name.
SORTS: dict[str, Sort] = {
    "started_at_desc": Sort("epoch_us(started_at)", "BIGINT", True),
    "started_at_asc": Sort("epoch_us(started_at)", "BIGINT", False),
    "cost_desc": Sort("coalesce(cost_usd, 0.0)", "DOUBLE", True),
    "cost_asc": Sort("coalesce(cost_usd, 0.0)", "DOUBLE", False),
    # A running run has no duration yet: it sorts after every finished run either way.
    "duration_desc": Sort("coalesce(duration_ms, -1)", "BIGINT", True),
    "duration_asc": Sort(f"coalesce(duration_ms, {_BIGINT_MAX})", "BIGINT", False),
}

_SUMMARY_COLS = """run_id, workflow_name, run_id_external, status, cost_usd, total_tokens,
    duration_ms, llm_call_count, tool_use_count, epoch_us(started_at), epoch_us(ended_at),
    cost_unknown_calls"""

_FILTER = """org = $org AND started_at BETWEEN $start AND $end
    AND ($workflows::VARCHAR[] IS NULL OR list_contains($workflows::VARCHAR[], workflow_name))
    AND ($statuses::VARCHAR[] IS NULL OR list_contains($statuses::VARCHAR[], status))
    AND ($cost_min::DOUBLE IS NULL OR coalesce(cost_usd, 0.0) >= $cost_min::DOUBLE)
    AND ($cost_max::DOUBLE IS NULL OR coalesce(cost_usd, 0.0) <= $cost_max::DOUBLE)"""


def _page_sql(sort: Sort) -> str:
    op, direction = ("<", "DESC") if sort.desc else (">", "ASC")
    k, t = sort.key_sql, sort.key_type
    return f"""SELECT {_SUMMARY_COLS}, {k} AS sort_key FROM runs
    WHERE {_FILTER}
      AND ($after_key::{t} IS NULL OR {k} {op} $after_key::{t}
           OR ({k} = $after_key::{t} AND run_id {op} $after_id::VARCHAR))
    ORDER BY sort_key {direction}, run_id {direction}
    LIMIT $limit"""


_PAGE_SQL = {name: _page_sql(sort) for name, sort in SORTS.items()}
_COUNT_SQL = f"SELECT count(*) FROM runs WHERE {_FILTER}"


@dataclass(frozen=True)
class RunSummary:
    id: str
    workflow_name: str
    run_id_external: str | None
    status: str
    cost_usd: float | None
    total_tokens: int | None
    duration_ms: int | None
    llm_call_count: int | None
    tool_use_count: int | None
    started_at_us: int
    ended_at_us: int | None
    # LLM calls of the run without a price: its cost_usd leaves them out (the UI says so).
    cost_unknown_calls: int | None = None


@dataclass(frozen=True)
class RunFilter:
    org: str
    window: Window
    workflows: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    cost_min: float | None = None
    cost_max: float | None = None

    def params(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "start": self.window.start,
            "end": self.window.end,
            "workflows": list(self.workflows) or None,
            "statuses": list(self.statuses) or None,
            "cost_min": self.cost_min,
            "cost_max": self.cost_max,
        }


# Where a page ended: the last row's sort key and run_id.
Position = tuple[int | float, str]


@dataclass(frozen=True)
class RunPage:
    runs: list[RunSummary]
    next_position: Position | None
    total_count: int


def list_runs(
    store: Reads, where: RunFilter, sort: str, after: Position | None, limit: int
) -> RunPage:
    """One page of runs in `sort` order after `after` (keyset: runs arriving meanwhile never
    shift a page), and how many runs match in all. `limit` is capped by the caller (≤ 100)."""
    params = where.params()
    count = fetch(store, _COUNT_SQL, params)
    total = int(count[0][0]) if count else 0
    if total == 0:
        return RunPage([], None, 0)
    page_params = {
        **params,
        "after_key": None if after is None else after[0],
        "after_id": None if after is None else after[1],
        "limit": limit + 1,  # one more tells whether there is a next page
    }
    rows = fetch(store, _PAGE_SQL[sort], page_params)
    runs = [_summary(r) for r in rows[:limit]]
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    return RunPage(runs, (last[-1], last[0]) if last else None, total)


def _summary(r: tuple[Any, ...]) -> RunSummary:
    return RunSummary(*r[:12])


# -- one run ------------------------------------------------------------------------------

_RUN_SQL = f"""SELECT {_SUMMARY_COLS}, session_id, user_id, input_excerpt, output_excerpt,
    error_type, trace_id, parent_run_id, input_tokens, output_tokens, cache_read_tokens,
    cache_write_tokens, reasoning_tokens, error_count, cost_unknown_calls, loop_detail,
    service_name, coalesce(tool_cost_usd, 0.0), call_span_ids, epoch_ns(started_at),
    epoch_ns(coalesce(ended_at, last_span_at))
    FROM runs WHERE org = $org AND run_key = $key AND run_id = $run_id
    LIMIT 1"""

_SPAN_COLS = """s.span_id, s.name, s.model, s.provider, s.input_tokens,
    s.output_tokens, s.cache_read_tokens, s.cache_write_tokens, s.reasoning_tokens, s.cost_usd,
    s.cost_source, s.tool_name, s.tool_call_id, s.tool_args, s.tool_result,
    coalesce(s.is_error, false) OR coalesce(s.status_code = 2, false) AS failed,
    coalesce(s.error_type, nullif(s.status_message, '')) AS error,
    s.start_time_unix_nano, s.end_time_unix_nano, s.price_source, s.price_book_version,
    s.price_effective_from, s.price_mode"""

_SPANS_SQL = f"""SELECT sr.span_type, {_SPAN_COLS}
    FROM span_runs sr
    JOIN spans s ON s.org = sr.org AND s.trace_id = sr.trace_id AND s.span_id = sr.span_id
    WHERE sr.org = $org AND sr.trace_id = $trace_id AND sr.run_id = $run_id
      AND sr.span_type IN ('llm', 'tool') AND s.org = $org AND s.trace_id = $trace_id
      -- The run's time window lets Parquet min/max statistics skip every other file.
      AND sr.start_time_unix_nano BETWEEN $lo AND $hi
      AND s.start_time_unix_nano BETWEEN $lo AND $hi
    ORDER BY s.start_time_unix_nano, s.span_id
    LIMIT $limit"""

# The two halves of `_SPANS_SQL`, for reading them apart: the LLM and tool spans of the trace
# in the run's time window, and which of them are the run's (listed in its `runs` row, else
# looked up in `span_runs`).
_TRACE_WINDOW_SQL = f"""SELECT s.span_type, {_SPAN_COLS} FROM spans s
    WHERE s.org = $org AND s.trace_id = $trace_id AND s.start_time_unix_nano BETWEEN $lo AND $hi
      AND s.span_type IN ('llm', 'tool')
    ORDER BY s.start_time_unix_nano, s.span_id
    LIMIT $limit"""
_RUN_SPAN_IDS_SQL = """SELECT span_id FROM span_runs
    WHERE org = $org AND trace_id = $trace_id AND run_id = $run_id
      AND span_type IN ('llm', 'tool') AND start_time_unix_nano BETWEEN $lo AND $hi"""
MAX_TRACE_WINDOW_SPANS = 4 * MAX_DETAIL_SPANS

_CHILDREN_SQL = f"""SELECT {_SUMMARY_COLS}, count(*) OVER () AS n FROM runs
    WHERE org = $org AND parent_run_key = $key AND parent_run_id = $run_id
    ORDER BY started_at, run_id
    LIMIT $limit"""

_SKEW_NS = 3600 * 1_000_000_000
_TRACE_COL = 17  # trace_id in `_RUN_SQL`
_CALL_IDS_COL = 29  # call_span_ids in `_RUN_SQL`

# UNION (not UNION ALL) and the depth bound keep a corrupt parent cycle from recursing forever.
_COMBINED_COST_SQL = """WITH RECURSIVE tree(run_id, depth) AS (
        SELECT run_id, 0 FROM runs WHERE org = $org AND run_id = $run_id
        UNION
        SELECT r.run_id, t.depth + 1 FROM runs r JOIN tree t ON r.parent_run_id = t.run_id
        WHERE r.org = $org AND t.depth < 64
    )
    SELECT sum(coalesce(cost_usd, 0.0)) FROM runs
    WHERE org = $org AND run_id IN (SELECT DISTINCT run_id FROM tree)"""


@dataclass(frozen=True)
class LlmCall:
    span_id: str
    name: str | None
    model: str | None
    provider: str | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    cost_source: str | None
    failed: bool
    error: str | None
    start_ns: int
    end_ns: int | None
    price: Price | None = None


@dataclass(frozen=True)
class Price:
    """Where a call's computed cost came from (the span's `price_*` columns)."""

    source: str | None
    version: str | None
    effective_from: str | None
    mode: str | None


@dataclass(frozen=True)
class ToolEvent:
    span_id: str
    tool_name: str | None
    tool_call_id: str | None
    tool_args: str | None
    tool_result: str | None
    failed: bool
    error: str | None
    start_ns: int
    end_ns: int | None
    cost_usd: float | None = None  # when the tool is priced (processors.cost.tools)
    cost_source: str | None = None
    price: Price | None = None


@dataclass(frozen=True)
class RunDetail:
    summary: RunSummary
    extra: dict[str, Any]
    llm_calls: list[LlmCall] = field(default_factory=list)
    tool_events: list[ToolEvent] = field(default_factory=list)
    child_runs: list[RunSummary] = field(default_factory=list)
    child_run_count: int = 0
    combined_cost_usd: float = 0.0


_EXTRA = (
    "session_id",
    "user_id",
    "input_excerpt",
    "output_excerpt",
    "error_type",
    "trace_id",
    "parent_run_id",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "error_count",
    "cost_unknown_calls",
    "loop_detail",
    "service_name",
    "tool_cost_usd",
)


def find_run(store: Reads, org: str, run_id: str) -> tuple[Any, ...] | None:
    """The row of one of `org`'s runs (`_RUN_SQL`'s columns), None if there is no such run."""
    lookup = run_key(org, run_id)
    if lookup is None:
        return None
    found = fetch(store, _RUN_SQL, {"org": org, "run_id": run_id, "key": lookup})
    return found[0] if found else None


def run_children(store: Reads, org: str, run_id: str) -> list[tuple[Any, ...]]:
    """The run's first MAX_CHILD_RUNS direct child runs, oldest first; each row ends with the
    number of children in all."""
    params = {"org": org, "run_id": run_id, "key": run_key(org, run_id), "limit": MAX_CHILD_RUNS}
    return fetch(store, _CHILDREN_SQL, params)


def _span_params(org: str, row: tuple[Any, ...]) -> dict[str, Any]:
    # Spans of a run start within it; an hour either side absorbs clock skew between services.
    lo, hi = int(row[-2]) - _SKEW_NS, int(row[-1] or row[-2]) + _SKEW_NS
    return {"org": org, "run_id": row[0], "trace_id": row[_TRACE_COL], "lo": lo, "hi": hi}


Spans = tuple[list["LlmCall"], list["ToolEvent"]]


def _calls(rows: list[tuple[Any, ...]]) -> Spans:
    """LLM calls and tool events from `_SPANS_SQL` rows (span type first), each capped."""
    llm_calls: list[LlmCall] = []
    tool_events: list[ToolEvent] = []
    for s in rows:
        if s[0] == "llm" and len(llm_calls) < MAX_DETAIL_SPANS:
            llm_calls.append(_llm_call(s))
        elif s[0] == "tool" and len(tool_events) < MAX_DETAIL_SPANS:
            event = ToolEvent(s[1], *s[12:20])
            tool_events.append(replace(event, cost_usd=s[10], cost_source=s[11], price=_price(s)))
    return llm_calls, tool_events


def run_spans(store: Reads, org: str, row: tuple[Any, ...]) -> Spans:
    """The LLM calls and tool events of the run of `row` (from `find_run`), in time order."""
    params = {**_span_params(org, row), "limit": 2 * MAX_DETAIL_SPANS}
    return _calls(fetch(store, _SPANS_SQL, params))


def listed_calls(row: tuple[Any, ...]) -> set[str] | None:
    """Ids of the run's LLM and tool spans as its row lists them (`runs.call_span_ids`, 8 raw
    bytes each); None when it does not (derived before that column, or too many to list)."""
    listed = row[_CALL_IDS_COL]
    if listed is None:
        return None
    hexed = bytes(listed).hex()
    return {hexed[i : i + 16] for i in range(0, len(hexed), 16)}


def run_call_ids(store: Reads, org: str, row: tuple[Any, ...]) -> set[str]:
    """Ids of the run's LLM and tool spans, from `span_runs`: one half of `run_spans`."""
    return {str(r[0]) for r in fetch(store, _RUN_SPAN_IDS_SQL, _span_params(org, row))}


def trace_window(store: Reads, org: str, row: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
    """The LLM and tool spans of the run's trace in its time window, in time order: the other
    half; None when the trace has more than MAX_TRACE_WINDOW_SPANS there (then `run_spans`)."""
    params = {**_span_params(org, row), "limit": MAX_TRACE_WINDOW_SPANS + 1}
    del params["run_id"]
    rows = fetch(store, _TRACE_WINDOW_SQL, params)
    return None if len(rows) > MAX_TRACE_WINDOW_SPANS else rows


def run_spans_of(window: list[tuple[Any, ...]], ids: set[str]) -> Spans:
    """`run_spans` from its two halves (the join, done here)."""
    return _calls([s for s in window if str(s[1]) in ids])


def combined_cost(
    store: Reads, org: str, row: tuple[Any, ...], children: list[tuple[Any, ...]]
) -> float:
    """The cost of the run of `row` and all its descendants."""
    if not children:  # the run's own: no recursive walk
        return float(row[4] or 0.0)
    found = fetch(store, _COMBINED_COST_SQL, {"org": org, "run_id": row[0]})
    return float(found[0][0] or 0.0) if found else 0.0


def run_detail(
    row: tuple[Any, ...],
    spans: Spans,
    children: list[tuple[Any, ...]],
    combined_cost_usd: float,
) -> RunDetail:
    return RunDetail(
        summary=_summary(row),
        extra=dict(zip(_EXTRA, row[12:_CALL_IDS_COL], strict=True)),
        llm_calls=spans[0],
        tool_events=spans[1],
        child_runs=[_summary(c) for c in children],
        child_run_count=int(children[0][-1]) if children else 0,
        combined_cost_usd=combined_cost_usd,
    )


def get_run(store: Reads, org: str, run_id: str) -> RunDetail | None:
    """One of `org`'s runs with its LLM calls and tool events in time order, its direct child
    runs, and the cost of it and all its descendants; None if `org` has no such run. (The read
    API spreads these queries over two readers: `collector/read/detail.py`.)"""
    row = find_run(store, org, run_id)
    if row is None:
        return None
    children = run_children(store, org, run_id)
    spans = run_spans(store, org, row)
    return run_detail(row, spans, children, combined_cost(store, org, row, children))


def _llm_call(s: tuple[Any, ...]) -> LlmCall:
    (_, span_id, name, model, provider, i, o, cr, cw, reasoning, cost, source) = s[:12]
    call = LlmCall(span_id, name, model, provider, i, o, cr, cw, reasoning, cost, source, *s[16:20])
    return replace(call, price=_price(s))


def _price(s: tuple[Any, ...]) -> Price | None:
    return None if s[11] != "computed" else Price(*s[20:24])
