"""Named aggregate queries: workflow summaries, per-workflow buckets and tools, overview totals,
and time series for Grafana. Each is parametrised SQL over `runs` (and `run_tools`/`spans`),
scoped by org and capped in rows; a run counts in a window when it *started* in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collector.store.query import (
    ERROR_STATUSES,
    MAX_BUCKETS,
    MAX_GROUPS,
    MAX_SERIES_ROWS,
    Window,
    epoch_us,
    fetch,
)
from collector.store.readers import Reads

_ERR = "list_contains($errors::VARCHAR[], status)"
_COST = "coalesce(cost_usd, 0.0)"

# -- workflows ----------------------------------------------------------------------------

# Fixed ORDER BY clauses, picked by the (validated) sort name; ties go by name.
_WORKFLOW_ORDER = {
    "total_cost_desc": "total_cost DESC",
    "run_count_desc": "run_count DESC",
    "error_rate_desc": "error_rate DESC",
    "avg_latency_desc": "avg_duration DESC NULLS LAST",
}
WORKFLOW_SORTS = tuple(_WORKFLOW_ORDER)

_WORKFLOWS_SQL = {
    name: f"""SELECT workflow_name, count(*) AS run_count, avg({_COST}) AS avg_cost,
        quantile_cont({_COST}, 0.95) AS p95_cost, sum({_COST}) AS total_cost,
        avg(CASE WHEN {_ERR} THEN 1.0 ELSE 0.0 END) AS error_rate,
        avg(duration_ms) AS avg_duration, epoch_us(max(started_at)) AS last_run_us
        FROM runs WHERE org = $org AND started_at BETWEEN $start AND $end
        GROUP BY workflow_name
        ORDER BY {order}, workflow_name
        LIMIT $limit"""
    for name, order in _WORKFLOW_ORDER.items()
}


@dataclass(frozen=True)
class WorkflowSummary:
    workflow_name: str
    run_count: int
    avg_cost_usd: float
    p95_cost_usd: float
    total_cost_usd: float
    error_rate: float
    avg_duration_ms: float | None  # None when no run of the window has finished
    last_run_us: int


def _window(org: str, window: Window, errors: bool = True) -> dict[str, Any]:
    # DuckDB refuses a named parameter the SQL does not use: only pass `errors` where it is.
    params: dict[str, Any] = {"org": org, "start": window.start, "end": window.end}
    if errors:
        params["errors"] = list(ERROR_STATUSES)
    return params


def list_workflows(store: Reads, org: str, window: Window, sort: str) -> list[WorkflowSummary]:
    """Per workflow, over its runs that started in `window`: counts, costs (mean, p95 by linear
    interpolation, total), error rate and mean duration of finished runs."""
    rows = fetch(store, _WORKFLOWS_SQL[sort], {**_window(org, window), "limit": MAX_GROUPS})
    return [WorkflowSummary(*r) for r in rows]


# -- one workflow -------------------------------------------------------------------------

_EXISTS_SQL = "SELECT 1 FROM runs WHERE org = $org AND workflow_name = $workflow LIMIT 1"

_STATS_SQL = f"""SELECT (epoch_us(started_at) // $width) * $width AS bucket, count(*),
    count(*) FILTER (WHERE {_ERR}), sum({_COST}), sum(coalesce(total_tokens, 0)),
    quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.95)
    FROM runs
    WHERE org = $org AND workflow_name = $workflow AND started_at BETWEEN $start AND $end
    GROUP BY bucket ORDER BY bucket
    LIMIT $limit"""

# A workflow's tool calls are its runs' `run_tools` rows (the deriver writes them beside each
# run, sorted by workflow and start on merge), so the breakdown reads only that workflow's rows;
# `first_of_tool` counts the runs using a tool without a DISTINCT over run ids.
_RUN_TOOLS = """SELECT tool, failed, latency_ms, first_of_tool FROM run_tools
    WHERE org = $org AND workflow_name = $workflow AND started_at BETWEEN $start AND $end"""

# MCP calls reported to `/api/mcp` join their trace's first run (as the tool_calls view does,
# read/views.py); such a run counts for the tool unless its own spans called it already. Read
# only when the org has MCP calls at all: finding their runs costs a scan of `runs`.
_MCP_CALLS = """SELECT m.tool, m.failed, m.latency_ms, m.first_of_tool AND NOT EXISTS (
        SELECT 1 FROM run_tools t WHERE t.org = $org AND t.run_id = m.run_id AND t.tool = m.tool)
    FROM (
        SELECT m.tool, r.run_id, m.failed, m.latency_ms,
            row_number() OVER (PARTITION BY r.run_id, m.tool ORDER BY m.started_at, m.event_id)
                = 1 AS first_of_tool
        FROM (
            SELECT lower(trace_id) AS trace_id, primitive_name AS tool, NOT success AS failed,
                latency_ms::DOUBLE AS latency_ms, started_at, event_id
            FROM mcp_events WHERE org = $org AND trace_id IS NOT NULL
        ) m JOIN (
            SELECT trace_id, arg_min(run_id, started_at) AS run_id,
                arg_min(workflow_name, started_at) AS workflow_name, min(started_at) AS started_at
            FROM runs WHERE org = $org AND trace_id IN (
                SELECT lower(trace_id) FROM mcp_events WHERE org = $org)
            GROUP BY trace_id
        ) r USING (trace_id)
        WHERE r.workflow_name = $workflow AND r.started_at BETWEEN $start AND $end
    ) m"""

_HAS_MCP_SQL = "SELECT 1 FROM mcp_events WHERE org = $org LIMIT 1"

_RUN_COUNT = """SELECT count(*) FROM runs
    WHERE org = $org AND workflow_name = $workflow AND started_at BETWEEN $start AND $end"""


def _tools_sql(mcp: bool, counted: bool) -> str:
    calls = f"{_RUN_TOOLS}\n    UNION ALL\n    {_MCP_CALLS}" if mcp else _RUN_TOOLS
    runs = "$runs::BIGINT" if counted else f"({_RUN_COUNT})"
    return f"""SELECT tool, count(*), avg(CASE WHEN failed THEN 1.0 ELSE 0.0 END),
    quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.95),
    count(*) FILTER (WHERE first_of_tool), {runs}
    FROM ({calls}) GROUP BY tool ORDER BY count(*) DESC, tool
    LIMIT $limit"""


_TOOLS_SQL = {
    (mcp, counted): _tools_sql(mcp, counted) for mcp in (False, True) for counted in (False, True)
}


@dataclass(frozen=True)
class Bucket:
    start_us: int
    runs: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    p50_duration_ms: float | None = None
    p95_duration_ms: float | None = None


@dataclass(frozen=True)
class ToolStats:
    tool_name: str
    calls: int
    error_rate: float
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    runs_using: int
    run_share: float  # runs_using / the workflow's runs in the window


def workflow_exists(store: Reads, org: str, workflow: str) -> bool:
    return bool(fetch(store, _EXISTS_SQL, {"org": org, "workflow": workflow}))


def workflow_stats(
    store: Reads, org: str, workflow: str, window: Window, width_us: int
) -> list[Bucket]:
    """Every bucket of `width_us` (aligned to the epoch, so to UTC) from the one holding the
    window's start to the one holding its end, ascending; empty buckets are zeros."""
    params = {**_window(org, window), "workflow": workflow, "width": width_us}
    rows = fetch(store, _STATS_SQL, {**params, "limit": MAX_BUCKETS})
    found = {int(r[0]): Bucket(int(r[0]), *r[1:]) for r in rows}
    first = _floor(epoch_us(window.start), width_us)
    last = _floor(epoch_us(window.end), width_us)
    n = min((last - first) // width_us + 1, MAX_BUCKETS)
    return [found.get(t, Bucket(t)) for t in range(first, first + n * width_us, width_us)]


def workflow_tools(
    store: Reads, org: str, workflow: str, window: Window, *, runs: int | None = None
) -> list[ToolStats]:
    """Per tool called in the workflow's runs that started in `window`, most-called first.
    `runs`: how many runs of the workflow started in `window`, if the caller counted them."""
    params = {**_window(org, window, errors=False), "workflow": workflow, "limit": MAX_GROUPS}
    if runs is not None:
        params["runs"] = runs
    mcp = bool(fetch(store, _HAS_MCP_SQL, {"org": org}))
    rows = fetch(store, _TOOLS_SQL[mcp, runs is not None], params)
    return [
        ToolStats(r[0], int(r[1]), float(r[2]), r[3], r[4], int(r[5]), _share(r[5], r[6]))
        for r in rows
    ]


def _share(part: int, whole: int) -> float:
    return int(part) / int(whole) if whole else 0.0


# -- overview -----------------------------------------------------------------------------

_TOTALS_SQL = f"""SELECT count(*), sum({_COST}), sum(coalesce(total_tokens, 0)),
    count(*) FILTER (WHERE {_ERR}), sum(coalesce(llm_call_count, 0)),
    sum(coalesce(tool_use_count, 0))
    FROM runs WHERE org = $org AND started_at BETWEEN $start AND $end"""

_TOP_WORKFLOWS_SQL = f"""SELECT workflow_name, sum({_COST}) AS cost, count(*)
    FROM runs WHERE org = $org AND started_at BETWEEN $start AND $end
    GROUP BY workflow_name ORDER BY cost DESC, workflow_name
    LIMIT 5"""

_TOP_MODELS_SQL = f"""SELECT model, sum({_COST}) AS cost, count(*),
    sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0))
    FROM spans
    WHERE org = $org AND span_type = 'llm' AND model IS NOT NULL
      AND start_time_unix_nano BETWEEN $start_ns AND $end_ns
    GROUP BY model ORDER BY cost DESC, model
    LIMIT 5"""


@dataclass(frozen=True)
class Totals:
    runs: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    errors: int = 0
    llm_calls: int = 0
    tool_calls: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.runs if self.runs else 0.0


@dataclass(frozen=True)
class Overview:
    totals: Totals
    previous: Totals
    top_workflows: list[tuple[str, float, int]]  # (workflow_name, cost, runs)
    top_models: list[tuple[str, float, int, int]]  # (model, cost, calls, tokens)


TopModels = list[tuple[str, float, int, int]]  # (model, cost, calls, tokens)


def _totals(store: Reads, org: str, w: Window) -> Totals:
    rows = fetch(store, _TOTALS_SQL, {**_window(org, w)})
    if not rows or not rows[0][0]:
        return Totals()
    r = rows[0]
    return Totals(int(r[0]), float(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]))


def top_models(store: Reads, org: str, window: Window) -> TopModels:
    """The five models with the most LLM-call cost in `window` (a scan of `spans`)."""
    params = {"org": org, "start_ns": window.start_ns, "end_ns": window.end_ns}
    rows = fetch(store, _TOP_MODELS_SQL, params)
    return [(r[0], float(r[1]), int(r[2]), int(r[3])) for r in rows]


def overview(
    store: Reads, org: str, window: Window, models: Callable[[], TopModels] | None = None
) -> Overview:
    """Totals of runs that started in `window` and in the window of the same length just
    before it; the top five workflows (by run cost) and models (by LLM-call cost). `models`,
    if given, supplies the top models (e.g. read on another thread meanwhile)."""

    params = {"org": org, "start": window.start, "end": window.end}
    current, previous = _totals(store, org, window), _totals(store, org, window.previous())
    workflows = [(r[0], float(r[1]), int(r[2])) for r in fetch(store, _TOP_WORKFLOWS_SQL, params)]
    return Overview(
        current,
        previous,
        workflows,
        models() if models is not None else top_models(store, org, window),
    )


# -- time series --------------------------------------------------------------------------

RUN_METRICS = ("runs", "errors", "cost_usd", "tokens", "llm_calls")
MODEL_METRICS = ("cost_usd", "tokens", "llm_calls")  # what LLM-call spans can say per model

# The group is a parameter of a CASE, not spliced SQL; without one the series is "all".
_RUN_SERIES_SQL = f"""SELECT (epoch_us(started_at) // $width) * $width AS bucket,
    CASE $group::VARCHAR WHEN 'workflow' THEN workflow_name WHEN 'status' THEN status
        ELSE 'all' END AS series,
    count(*), count(*) FILTER (WHERE {_ERR}), sum({_COST}), sum(coalesce(total_tokens, 0)),
    sum(coalesce(llm_call_count, 0))
    FROM runs WHERE org = $org AND started_at BETWEEN $start AND $end
    GROUP BY ALL ORDER BY bucket, series
    LIMIT $limit"""

_MODEL_SERIES_SQL = f"""SELECT (start_time_unix_nano // 1000 // $width) * $width AS bucket,
    coalesce(model, 'unknown') AS series, NULL, NULL, sum({_COST}),
    sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0)), count(*)
    FROM spans
    WHERE org = $org AND span_type = 'llm'
      AND start_time_unix_nano BETWEEN $start_ns AND $end_ns
    GROUP BY ALL ORDER BY bucket, series
    LIMIT $limit"""

_METRIC_COLUMN = {"runs": 2, "errors": 3, "cost_usd": 4, "tokens": 5, "llm_calls": 6}


@dataclass(frozen=True)
class Point:
    time_us: int
    series: str
    value: float | int


def timeseries(
    store: Reads,
    org: str,
    window: Window,
    *,
    metric: str,
    width_us: int,
    group_by: str | None,
) -> list[Point]:
    """`metric` per bucket of `width_us` (epoch-aligned) and series, ascending by time then
    series; buckets without data are absent. `group_by="model"` reads LLM-call spans."""
    if group_by == "model":
        params: dict[str, Any] = {"org": org, "start_ns": window.start_ns}
        params.update(end_ns=window.end_ns, width=width_us, limit=MAX_SERIES_ROWS)
        rows = fetch(store, _MODEL_SERIES_SQL, params)
    else:
        params = {**_window(org, window), "group": group_by, "width": width_us}
        rows = fetch(store, _RUN_SERIES_SQL, {**params, "limit": MAX_SERIES_ROWS})
    col = _METRIC_COLUMN[metric]
    return [Point(int(r[0]), str(r[1]), r[col]) for r in rows]


@dataclass(frozen=True)
class SeriesRow:
    """Every run metric of `timeseries` for one bucket and workflow, for a page that draws
    several of them."""

    time_us: int
    series: str
    runs: int
    errors: int
    cost_usd: float
    tokens: int
    llm_calls: int


# The overview page's numbers from one scan of the window's runs: the day (or hour) buckets by
# workflow, then the totals and top workflows summed from those few rows (level 0: a bucket of
# a workflow, 1: a workflow, 2: the window), where separate queries scanned `runs` three times.
_PAGE_OVERVIEW_SQL = f"""WITH g AS MATERIALIZED (
        SELECT (epoch_us(started_at) // $width) * $width AS bucket, workflow_name,
            count(*) AS runs, count(*) FILTER (WHERE {_ERR}) AS errors, sum({_COST}) AS cost,
            sum(coalesce(total_tokens, 0)) AS tokens,
            sum(coalesce(llm_call_count, 0)) AS llm_calls,
            sum(coalesce(tool_use_count, 0)) AS tool_calls
        FROM runs WHERE org = $org AND started_at BETWEEN $start AND $end
        GROUP BY ALL
    )
    (SELECT 2, NULL, NULL, sum(runs), sum(errors), sum(cost), sum(tokens), sum(llm_calls),
        sum(tool_calls) FROM g)
    UNION ALL
    (SELECT 1, NULL, workflow_name, sum(runs), NULL, sum(cost), NULL, NULL, NULL FROM g
        GROUP BY workflow_name ORDER BY sum(cost) DESC, workflow_name LIMIT 5)
    UNION ALL
    (SELECT 0, bucket, workflow_name, runs, errors, cost, tokens, llm_calls, tool_calls FROM g
        ORDER BY bucket, workflow_name LIMIT $limit)"""


def page_overview(
    store: Reads, org: str, window: Window, *, width_us: int
) -> tuple[Overview, list[SeriesRow]]:
    """`overview` without top models, and `run_series` by workflow, from one scan of the
    window's runs (and one of the previous window's for its totals)."""
    params = {**_window(org, window), "width": width_us, "limit": MAX_SERIES_ROWS}
    rows = fetch(store, _PAGE_OVERVIEW_SQL, params)
    # UNION ALL keeps no order between or within its parts: the orders of the queries it
    # replaces (NULL names last, as DuckDB sorts them).
    rows.sort(
        key=lambda r: (r[0], r[1] or 0, -r[5] if r[0] == 1 else 0.0, r[2] is None, r[2] or "")
    )
    totals = Totals()
    for r in rows:
        if r[0] == 2 and r[3]:
            totals = Totals(int(r[3]), float(r[5]), int(r[6]), int(r[4]), int(r[7]), int(r[8]))
    top = [(r[2], float(r[5]), int(r[3])) for r in rows if r[0] == 1]
    series = [
        SeriesRow(int(r[1]), str(r[2]), int(r[3]), int(r[4]), float(r[5]), int(r[6]), int(r[7]))
        for r in rows
        if r[0] == 0
    ]
    previous = _totals(store, org, window.previous())
    return Overview(totals, previous, top, []), series


def _floor(us: int, width: int) -> int:
    return (us // width) * width
