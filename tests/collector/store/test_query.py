"""Tests for the query layer (`collector/store/query.py`, `collector/read/`): a real DuckLake store
in a temporary dir, `runs`, `span_runs` and `spans` rows inserted directly with known values, read
back through the named query functions; expected numbers are computed by hand in the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from collector.mcp import store as mcp_store
from collector.model import Signal
from collector.read import metrics as qm
from collector.read import runs as qr
from collector.read.views import create_views
from collector.runs.upkeep import fill_run_tools
from collector.store.keys import run_key
from collector.store.lake import StoreSettings
from collector.store.query import Window, derived_tables_ready
from collector.store.schema import (
    DERIVED_TABLES,
    create_derived_sql,
    derived_arrow_schema,
    to_table,
)
from collector.store.writer import Store

T0 = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
S = 1_000_000_000
WIDE = Window(T0 - timedelta(days=1), T0 + timedelta(days=1))


def ns(t: datetime) -> int:
    return int((t - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)) * 1000


@pytest.fixture
def bare_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(StoreSettings(catalog=str(tmp_path / "cat.ducklake"), data_path=str(tmp_path / "d")))
    s.open()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def store(bare_store: Store) -> Store:
    def create(cur: Any) -> None:
        for name in DERIVED_TABLES:
            cur.execute(create_derived_sql(name))

    bare_store.call(create)
    bare_store.call(mcp_store.create_tables)
    create_views(bare_store)  # as the service does at start
    return bare_store


def run_row(n: int, **kw: Any) -> dict[str, Any]:
    """A finished run `n` of acme, started n minutes after T0, lasting n seconds."""
    trace = f"{n:032x}"
    started = kw.pop("started_at", T0 + timedelta(minutes=n))
    status = kw.pop("status", "success")
    duration = kw.pop("duration_ms", None if status == "running" else n * 1000)
    row: dict[str, Any] = {
        "org": "acme",
        "run_id": trace + f"{n:016x}",
        "trace_id": trace,
        "span_id": f"{n:016x}",
        "workflow_name": "triage",
        "status": status,
        "started_at": started,
        "ended_at": None if duration is None else started + timedelta(milliseconds=duration),
        "duration_ms": duration,
        "cost_usd": 0.001 * n,
        "total_tokens": 100 * n,
        "llm_call_count": 1,
        "tool_use_count": 2,
        "cost_unknown_calls": 0,
        "error_count": 0,
    }
    row.update(kw)
    return row


def insert(store: Store, table: str, rows: list[dict[str, Any]]) -> None:
    if table == "spans":
        cols = {k: [r.get(k) for r in rows] for k in {k for r in rows for k in r}}
        data = to_table(Signal.TRACES, cols, len(rows))
    else:
        if table == "runs":  # as the deriver writes them, with the integer lookup keys
            rows = [
                {
                    **r,
                    "run_key": run_key(r["org"], r["run_id"]),
                    "parent_run_key": run_key(r["org"], r.get("parent_run_id")),
                }
                for r in rows
            ]
        data = pa.Table.from_pylist(rows, derived_arrow_schema(table))

    def write(cur: Any) -> None:
        cur.register("_in", data)
        cur.execute(f"INSERT INTO {table} SELECT * FROM _in")
        cur.unregister("_in")

    store.call(write)


def ids(page: qr.RunPage) -> list[str]:
    return [r.id for r in page.runs]


def rid(n: int) -> str:
    return f"{n:032x}{n:016x}"


def all_pages(store: Store, sort: str, limit: int, where: qr.RunFilter) -> list[str]:
    seen: list[str] = []
    after = None
    for _ in range(100):
        page = qr.list_runs(store, where, sort, after, limit)
        seen += ids(page)
        if page.next_position is None:
            return seen
        after = page.next_position
    raise AssertionError("pagination did not end")


ACME = qr.RunFilter("acme", WIDE)

# -- the run list ---------------------------------------------------------------------------


def test_runs_newest_first_with_total_and_filters(store: Store) -> None:
    insert(
        store,
        "runs",
        [
            run_row(1),
            run_row(2, workflow_name="billing", status="error"),
            run_row(3, status="running"),
            run_row(4, org="globex"),
        ],
    )
    page = qr.list_runs(store, ACME, "started_at_desc", None, 50)
    assert ids(page) == [rid(3), rid(2), rid(1)]
    assert page.total_count == 3 and page.next_position is None
    running = page.runs[0]
    assert running.status == "running" and running.duration_ms is None
    assert running.ended_at_us is None

    def only(**kw: Any) -> list[str]:
        where = qr.RunFilter("acme", kw.pop("window", WIDE), **kw)
        return ids(qr.list_runs(store, where, "started_at_asc", None, 50))

    assert only(workflows=("billing",)) == [rid(2)]
    assert only(workflows=("billing", "triage")) == [rid(1), rid(2), rid(3)]
    assert only(statuses=("success", "running")) == [rid(1), rid(3)]
    assert only(cost_min=0.002) == [rid(2), rid(3)]
    assert only(cost_min=0.002, cost_max=0.002) == [rid(2)]  # both ends inclusive
    exact = Window(T0 + timedelta(minutes=1), T0 + timedelta(minutes=2))
    assert only(window=exact) == [rid(1), rid(2)]  # the window is inclusive too


def test_ties_in_the_sort_key_are_broken_by_run_id_and_pages_cover_all_once(store: Store) -> None:
    insert(store, "runs", [run_row(n, cost_usd=0.5 if n % 2 else 0.25) for n in range(1, 8)])
    odd, even = [rid(n) for n in (1, 3, 5, 7)], [rid(n) for n in (2, 4, 6)]
    assert all_pages(store, "cost_desc", 2, ACME) == odd[::-1] + even[::-1]
    assert all_pages(store, "cost_asc", 3, ACME) == even + odd
    assert all_pages(store, "started_at_desc", 1, ACME) == [rid(n) for n in range(7, 0, -1)]


def test_a_run_arriving_between_pages_neither_repeats_nor_skips_a_row(store: Store) -> None:
    insert(store, "runs", [run_row(n) for n in range(1, 6)])
    first = qr.list_runs(store, ACME, "started_at_desc", None, 2)
    assert ids(first) == [rid(5), rid(4)] and first.total_count == 5
    insert(store, "runs", [run_row(9)])  # newer than everything: belongs before page one
    second = qr.list_runs(store, ACME, "started_at_desc", first.next_position, 2)
    assert ids(second) == [rid(3), rid(2)] and second.total_count == 6
    third = qr.list_runs(store, ACME, "started_at_desc", second.next_position, 2)
    assert ids(third) == [rid(1)] and third.next_position is None
    # Oldest first, a run arriving at the end shows up on a later page.
    up = qr.list_runs(store, ACME, "started_at_asc", None, 3)
    insert(store, "runs", [run_row(10)])
    rest = all_pages_from(store, "started_at_asc", up.next_position)
    assert ids(up) + rest == [rid(n) for n in (1, 2, 3, 4, 5, 9, 10)]


def all_pages_from(store: Store, sort: str, after: qr.Position | None) -> list[str]:
    out: list[str] = []
    while after is not None:
        page = qr.list_runs(store, ACME, sort, after, 2)
        out += ids(page)
        after = page.next_position
    return out


def test_running_runs_sort_after_finished_ones_by_duration_either_way(store: Store) -> None:
    insert(store, "runs", [run_row(1), run_row(2, status="running"), run_row(3)])
    assert all_pages(store, "duration_desc", 1, ACME) == [rid(3), rid(1), rid(2)]
    assert all_pages(store, "duration_asc", 1, ACME) == [rid(1), rid(3), rid(2)]


def test_a_page_past_the_end_is_empty(store: Store) -> None:
    insert(store, "runs", [run_row(1)])
    page = qr.list_runs(store, ACME, "started_at_desc", (0, ""), 10)
    assert page.runs == [] and page.next_position is None and page.total_count == 1


def test_before_the_deriver_made_its_tables_there_are_no_runs(bare_store: Store) -> None:
    assert not derived_tables_ready(bare_store)
    assert qr.list_runs(bare_store, ACME, "started_at_desc", None, 10).total_count == 0
    assert qr.get_run(bare_store, "acme", rid(1)) is None
    assert qm.list_workflows(bare_store, "acme", WIDE, "total_cost_desc") == []
    assert qm.overview(bare_store, "acme", WIDE).totals == qm.Totals()


# -- one run --------------------------------------------------------------------------------


def span(n: int, i: int, kind: str, offset_s: float, **kw: Any) -> dict[str, Any]:
    start = ns(T0 + timedelta(minutes=n)) + int(offset_s * S)
    row = {
        "org": "acme",
        "trace_id": f"{n:032x}",
        "span_id": f"{n:08x}{i:08x}",
        "name": f"{kind} {i}",
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + S // 4,
        "status_code": 0,
        "span_type": kind,
        "is_error": False,
    }
    row.update(kw)
    return row


def span_run(s: dict[str, Any], run_id: str) -> dict[str, Any]:
    keys = ("org", "trace_id", "span_id", "span_type", "start_time_unix_nano")
    return {**{k: s[k] for k in keys}, "run_id": run_id}


def test_run_detail_has_its_calls_in_time_order_children_and_combined_cost(store: Store) -> None:
    root, child, grandchild = run_row(1), run_row(1, span_id="c" * 16), run_row(1)
    child.update(run_id=rid(1)[:32] + "c" * 16, parent_run_id=rid(1), cost_usd=0.02)
    grandchild.update(run_id=rid(1)[:32] + "d" * 16, parent_run_id=child["run_id"])
    grandchild.update(cost_usd=0.3, span_id="d" * 16)
    stranger = run_row(1, org="globex", run_id=rid(1)[:32] + "e" * 16, parent_run_id=rid(1))
    insert(store, "runs", [root, child, grandchild, stranger])
    spans = [
        span(1, 3, "tool", 2.0, tool_name="search", tool_args='{"q":1}', tool_result="[]"),
        span(1, 1, "llm", 0.5, model="gpt-4o", provider="openai", input_tokens=10, cost_usd=0.001),
        span(1, 2, "llm", 1.0, model="gpt-4o", is_error=True, error_type="RateLimit"),
        span(1, 4, "tool", 1.5, tool_name="fetch", status_code=2, status_message="boom"),
        span(1, 5, "llm", 3.0, model="child-model"),  # the child run's call, not the root's
    ]
    insert(store, "spans", spans)
    insert(store, "span_runs", [span_run(s, rid(1)) for s in spans[:4]])
    insert(store, "span_runs", [span_run(spans[4], child["run_id"])])

    d = qr.get_run(store, "acme", rid(1))
    assert d is not None
    assert d.summary.id == rid(1) and d.extra["trace_id"] == f"{1:032x}"
    assert [(c.span_id[-1], c.failed, c.error) for c in d.llm_calls] == [
        ("1", False, None),
        ("2", True, "RateLimit"),
    ]
    assert d.llm_calls[0].cost_usd == 0.001 and d.llm_calls[0].input_tokens == 10
    assert [(t.tool_name, t.failed, t.error) for t in d.tool_events] == [
        ("fetch", True, "boom"),
        ("search", False, None),
    ]
    assert d.llm_calls[0].end_ns is not None
    assert d.llm_calls[0].end_ns - d.llm_calls[0].start_ns == S // 4
    assert [c.id for c in d.child_runs] == [child["run_id"]] and d.child_run_count == 1
    assert d.combined_cost_usd == pytest.approx(0.001 + 0.02 + 0.3)
    assert qr.get_run(store, "globex", rid(1)) is None
    assert qr.get_run(store, "acme", "nope") is None


# -- workflows ------------------------------------------------------------------------------


def test_workflow_summary_p95_error_rate_and_durations(store: Store) -> None:
    statuses = ["success"] * 6 + ["error", "timeout", "loop_detected", "running"]
    insert(store, "runs", [run_row(n, status=statuses[n - 1]) for n in range(1, 11)])
    insert(store, "runs", [run_row(11, workflow_name="billing", cost_usd=1.0)])
    insert(store, "runs", [run_row(12, org="globex", workflow_name="secret")])
    rows = qm.list_workflows(store, "acme", WIDE, "total_cost_desc")
    assert [w.workflow_name for w in rows] == ["billing", "triage"]
    triage = rows[1]
    assert triage.run_count == 10
    # Costs 0.001..0.010: p95 by linear interpolation = 0.009 + 0.55 * 0.001.
    assert triage.p95_cost_usd == pytest.approx(0.00955)
    assert triage.total_cost_usd == pytest.approx(0.055)
    assert triage.avg_cost_usd == pytest.approx(0.0055)
    assert triage.error_rate == pytest.approx(3 / 10)  # error, timeout, loop; running is not
    assert triage.avg_duration_ms == pytest.approx(5000)  # runs 1..9 finished: mean of 1..9 s
    assert triage.last_run_us == ns(T0 + timedelta(minutes=10)) // 1000
    by_count = qm.list_workflows(store, "acme", WIDE, "run_count_desc")
    assert [w.workflow_name for w in by_count] == ["triage", "billing"]
    by_errors = qm.list_workflows(store, "acme", WIDE, "error_rate_desc")
    assert [w.workflow_name for w in by_errors] == ["triage", "billing"]
    by_latency = qm.list_workflows(store, "acme", WIDE, "avg_latency_desc")
    assert [w.workflow_name for w in by_latency] == ["billing", "triage"]


def test_workflow_stats_fill_every_bucket_in_time_order(store: Store) -> None:
    hour = timedelta(hours=1)
    insert(
        store,
        "runs",
        [
            run_row(1, started_at=T0, duration_ms=100),
            run_row(2, started_at=T0 + timedelta(minutes=30), duration_ms=300, status="error"),
            run_row(3, started_at=T0 + 2 * hour, duration_ms=50),
            run_row(4, started_at=T0 + 2 * hour, org="globex", workflow_name="other"),
        ],
    )
    window = Window(T0 - hour + timedelta(minutes=1), T0 + 2 * hour)
    buckets = qm.workflow_stats(store, "acme", "triage", window, 3600 * 10**6)
    assert [b.start_us for b in buckets] == [ns(T0 + k * hour) // 1000 for k in (-1, 0, 1, 2)]
    assert [(b.runs, b.errors) for b in buckets] == [(0, 0), (2, 1), (0, 0), (1, 0)]
    full = buckets[1]
    assert full.cost_usd == pytest.approx(0.003) and full.tokens == 300
    assert full.p50_duration_ms == pytest.approx(200)
    assert full.p95_duration_ms == pytest.approx(290)  # 100 + 0.95 * 200
    assert buckets[0].p50_duration_ms is None
    assert qm.workflow_exists(store, "acme", "triage")
    assert not qm.workflow_exists(store, "globex", "triage")


def test_workflow_tools_calls_errors_latency_and_share_of_runs(store: Store) -> None:
    insert(store, "runs", [run_row(n) for n in (1, 2, 3, 4)])
    spans = [
        span(1, 1, "tool", 0, tool_name="search"),
        span(1, 2, "tool", 1, tool_name="search", is_error=True),
        span(2, 1, "tool", 0, tool_name="search", end_time_unix_nano=None),
        span(2, 2, "tool", 1, tool_name="fetch"),
        span(3, 1, "llm", 0),
    ]
    spans[2]["end_time_unix_nano"] = spans[2]["start_time_unix_nano"] + S
    insert(store, "spans", spans)
    insert(store, "span_runs", [span_run(s, rid(int(s["trace_id"], 16))) for s in spans])
    store.call(fill_run_tools)  # the rows the deriver writes beside each run
    tools = qm.workflow_tools(store, "acme", "triage", WIDE)
    assert [t.tool_name for t in tools] == ["search", "fetch"]
    search = tools[0]
    assert search.calls == 3 and search.error_rate == pytest.approx(1 / 3)
    assert search.p50_latency_ms == pytest.approx(250)
    assert search.p95_latency_ms == pytest.approx(250 + 0.9 * 750)  # 250, 250, 1000
    assert search.runs_using == 2 and search.run_share == pytest.approx(2 / 4)
    assert tools[1].run_share == pytest.approx(1 / 4)
    assert qm.workflow_tools(store, "globex", "triage", WIDE) == []


# -- overview and time series ---------------------------------------------------------------


def test_overview_totals_against_the_previous_window(store: Store) -> None:
    day = timedelta(days=1)
    insert(
        store,
        "runs",
        [
            run_row(1, status="error", llm_call_count=3),
            run_row(2, workflow_name="billing", cost_usd=0.5),
            run_row(3, started_at=T0 - day + timedelta(minutes=1)),  # the previous window
            run_row(4, org="globex", cost_usd=9.0),
        ],
    )
    insert(store, "spans", [span(1, 1, "llm", 0, model="gpt-4o", cost_usd=0.25)])
    o = qm.overview(store, "acme", Window(T0, T0 + day))
    assert o.totals == qm.Totals(2, 0.501, 300, 1, 4, 4)
    assert o.totals.error_rate == 0.5
    assert o.previous == qm.Totals(1, 0.003, 300, 0, 1, 2)
    assert o.top_workflows == [("billing", 0.5, 1), ("triage", pytest.approx(0.001), 1)]
    assert o.top_models == [("gpt-4o", 0.25, 1, 0)]


def test_timeseries_by_status_and_by_model(store: Store) -> None:
    insert(
        store,
        "runs",
        [run_row(1), run_row(2, status="error"), run_row(70, started_at=T0 + timedelta(hours=1))],
    )
    hour = 3600 * 10**6
    pts = qm.timeseries(store, "acme", WIDE, metric="runs", width_us=hour, group_by="status")
    t0, t1 = ns(T0) // 1000, ns(T0) // 1000 + hour
    assert [(p.time_us, p.series, p.value) for p in pts] == [
        (t0, "error", 1),
        (t0, "success", 1),
        (t1, "success", 1),
    ]
    total = qm.timeseries(store, "acme", WIDE, metric="errors", width_us=hour, group_by=None)
    assert [(p.series, p.value) for p in total] == [("all", 1), ("all", 0)]
    insert(store, "spans", [span(1, 1, "llm", 0, model="m1", input_tokens=5, output_tokens=2)])
    by_model = qm.timeseries(store, "acme", WIDE, metric="tokens", width_us=hour, group_by="model")
    assert [(p.series, p.value) for p in by_model] == [("m1", 7)]
