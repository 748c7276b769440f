"""Tests for `collector/read/metrics.py`'s tool breakdown: which run a tool call counts for (its
`run_tools` rows, as the deriver writes them), and for MCP calls by their trace. A real store
(tests/collector/store/test_query.py's helpers)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import astuple
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.mcp import store as mcp_store
from collector.read import metrics as qm
from collector.runs.upkeep import fill_run_tools
from collector.store.query import Window
from collector.store.writer import Store
from tests.collector.store.test_query import T0, WIDE, insert, rid, run_row, span, span_run
from tests.stores import service_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with service_store(tmp_path) as s:  # derived tables, MCP tables and views, as at start
        yield s


def child_of(n: int, tail: str, **kw: Any) -> dict[str, Any]:
    """A run in trace `n` under run `n`, its run span `tail` (16 hex), started a minute later."""
    row = run_row(n, span_id=tail, parent_run_id=rid(n), **kw)
    row.update(run_id=rid(n)[:32] + tail, started_at=T0 + timedelta(minutes=n + 1))
    return row


def by_name(tools: list[qm.ToolStats]) -> dict[str, tuple[int, float, int, float]]:
    return {t.tool_name: (t.calls, t.error_rate, t.runs_using, t.run_share) for t in tools}


def test_a_tool_call_counts_for_its_own_run_not_the_others_of_its_trace(store: Store) -> None:
    spans = [
        span(1, 1, "tool", 0, tool_name="search"),
        span(1, 2, "tool", 1, tool_name="search", status_code=2),
        span(1, 3, "tool", 2, tool_name="fetch"),  # the child run's call
        span(1, 4, "llm", 3),
        span(2, 1, "tool", 0, name="execute_tool sql"),  # no tool name: the span's name
    ]
    root_ids, child_ids = [spans[0], spans[1], spans[3]], [spans[2]]
    child = child_of(1, "c" * 16)
    insert(store, "runs", [run_row(1), child, run_row(2)])
    insert(store, "spans", spans)
    rows = [span_run(s, rid(1)) for s in root_ids]
    rows += [span_run(s, child["run_id"]) for s in child_ids] + [span_run(spans[4], rid(2))]
    insert(store, "span_runs", rows)
    store.call(fill_run_tools)

    tools = qm.workflow_tools(store, "acme", "triage", WIDE)
    assert [t.tool_name for t in tools] == ["search", "execute_tool sql", "fetch"]
    assert by_name(tools) == {
        "search": (2, 0.5, 1, 1 / 3),
        "fetch": (1, 0.0, 1, 1 / 3),
        "execute_tool sql": (1, 0.0, 1, 1 / 3),
    }
    # A caller that counted the window's runs (the UI, from its stats) gets the same.
    assert qm.workflow_tools(store, "acme", "triage", WIDE, runs=3) == tools
    # Only the root started in this window: the child's call is not the root's.
    only_root = Window(T0, T0 + timedelta(minutes=1))
    assert by_name(qm.workflow_tools(store, "acme", "triage", only_root)) == {
        "search": (2, 0.5, 1, 1.0)
    }


def test_the_breakdown_reads_run_tools_not_spans(store: Store) -> None:
    # What the deriver wrote for the run is the breakdown, whatever `spans` holds since
    # (retention may have dropped the tool spans; the run and its calls' timings stay).
    spans = [span(1, 1, "tool", 0, tool_name="search"), span(1, 2, "tool", 1, tool_name="fetch")]
    insert(store, "runs", [run_row(1)])
    insert(store, "spans", spans)
    insert(store, "span_runs", [span_run(s, rid(1)) for s in spans])
    store.call(fill_run_tools)
    store.call(lambda cur: cur.execute("DELETE FROM spans"))
    assert by_name(qm.workflow_tools(store, "acme", "triage", WIDE)) == {
        "search": (1, 0.0, 1, 1.0),
        "fetch": (1, 0.0, 1, 1.0),
    }


def mcp_event(trace_id: str, name: str, success: bool, latency_ms: int) -> dict[str, Any]:
    return {
        "org": "acme",
        "event_id": f"{trace_id}-{name}-{latency_ms}",
        "session_id": "s1",
        "seq": latency_ms,
        "received_at": T0,
        "started_at": T0,
        "primitive_name": name,
        "primitive_type": "tool",
        "success": success,
        "latency_ms": latency_ms,
        "trace_id": trace_id,
    }


def test_mcp_calls_count_for_the_first_run_of_their_trace(store: Store) -> None:
    # Trace 1: a triage run, then a triage child; trace 2: its first run is another workflow's.
    first, later = run_row(1), child_of(1, "c" * 16)
    insert(store, "runs", [first, later, run_row(2, workflow_name="other"), run_row(3)])
    events = [
        mcp_event(f"{1:032X}", "crm_lookup", True, 10),  # upper-case hex: matched all the same
        mcp_event(f"{1:032x}", "crm_lookup", False, 30),
        mcp_event(f"{2:032x}", "crm_lookup", True, 50),
        mcp_event("f" * 32, "crm_lookup", True, 70),  # a trace the collector does not hold
    ]

    def write(cur: Any) -> None:
        cur.register("_in", mcp_store.to_table("mcp_events", events))
        cur.execute("INSERT INTO mcp_events SELECT * FROM _in")
        cur.unregister("_in")

    store.call(write)
    tools = qm.workflow_tools(store, "acme", "triage", WIDE)
    assert by_name(tools) == {"crm_lookup": (2, 0.5, 1, 1 / 3)}
    assert tools[0].p50_latency_ms == pytest.approx(20)
    assert by_name(qm.workflow_tools(store, "acme", "other", WIDE)) == {
        "crm_lookup": (1, 0.0, 1, 1.0)
    }
    assert qm.workflow_tools(store, "globex", "triage", WIDE) == []


def test_a_run_calling_a_tool_by_span_and_by_mcp_counts_once(store: Store) -> None:
    spans = [span(1, 1, "tool", 0, tool_name="crm_lookup")]
    insert(store, "runs", [run_row(1), run_row(2)])
    insert(store, "spans", spans)
    insert(store, "span_runs", [span_run(spans[0], rid(1))])
    store.call(fill_run_tools)
    events = [
        mcp_event(f"{1:032x}", "crm_lookup", True, 10),  # run 1 called it as a span too
        mcp_event(f"{2:032x}", "crm_lookup", True, 30),
        mcp_event(f"{2:032x}", "crm_lookup", True, 50),  # run 2 twice: one run
    ]

    def write(cur: Any) -> None:
        cur.register("_in", mcp_store.to_table("mcp_events", events))
        cur.execute("INSERT INTO mcp_events SELECT * FROM _in")
        cur.unregister("_in")

    store.call(write)
    assert by_name(qm.workflow_tools(store, "acme", "triage", WIDE)) == {
        "crm_lookup": (4, 0.0, 2, 1.0)
    }


# -- the overview page --------------------------------------------------------------------


def test_page_overview_is_the_overview_and_series_it_replaces(store: Store) -> None:
    day, hour = timedelta(days=1), 3600 * 10**6
    rows = [
        run_row(n, workflow_name=f"wf-{n % 7}", status="error" if n % 5 == 0 else "success")
        | {"started_at": T0 + timedelta(hours=n % 20, minutes=n), "tool_use_count": n % 3}
        for n in range(1, 60)
    ]
    rows += [
        run_row(70, started_at=T0 - day + timedelta(hours=2)),  # the previous window
        run_row(71, workflow_name=None, cost_usd=2.0),  # no workflow name; the costliest
        run_row(72, org="globex", cost_usd=9.0),
    ]
    insert(store, "runs", rows)
    window = Window(T0, T0 + day)
    overview, series = qm.page_overview(store, "acme", window, width_us=hour)
    before = qm.overview(store, "acme", window, lambda: [])
    assert overview.totals.runs == 60 and overview.totals.errors == 11
    assert astuple(overview.totals) == pytest.approx(astuple(before.totals))
    assert overview.previous == before.previous == qm.Totals(1, 0.07, 7000, 0, 1, 2)
    assert [(w, c) for w, c, _ in overview.top_workflows][:1] == [(None, 2.0)]
    assert overview.top_workflows == [(w, pytest.approx(c), n) for w, c, n in before.top_workflows]
    assert overview.top_models == []
    # The Grafana series by workflow, one metric at a time: the same buckets and sums.
    for metric in qm.RUN_METRICS:
        points = qm.timeseries(
            store, "acme", window, metric=metric, width_us=hour, group_by="workflow"
        )
        assert len(points) == len(series) > 20
        got = [(s.time_us, s.series, getattr(s, metric)) for s in series]
        want = [(p.time_us, p.series, p.value) for p in points]
        if metric == "cost_usd":
            assert [g[:2] for g in got] == [w[:2] for w in want]
            assert [g[2] for g in got] == pytest.approx([w[2] for w in want])
        else:
            assert got == want


def test_page_overview_of_a_window_without_runs(store: Store) -> None:
    insert(store, "runs", [run_row(1, org="globex")])
    overview, series = qm.page_overview(store, "acme", WIDE, width_us=3600 * 10**6)
    assert (overview.totals, overview.previous, overview.top_workflows, series) == (
        qm.Totals(),
        qm.Totals(),
        [],
        [],
    )
