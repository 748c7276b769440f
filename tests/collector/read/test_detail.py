"""Tests for `collector/read/detail.py`: a run's detail read on two readers must equal the plain
sequential queries of `query_runs.get_run`, whether the run's row lists its calls or not,
including the fallback for big traces, the side tables (alert events) and failures on either
thread. A real DuckLake store in a temp dir.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.alerts import store as alerts_store
from collector.read import detail as rd
from collector.read import runs as qr
from collector.store.writer import Store
from tests.collector.store.test_query import T0, insert, rid, run_row, span, span_run
from tests.stores import service_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with service_store(tmp_path) as s:  # derived tables and views, as the service makes them
        yield s


def _shared_trace(store: Store, *, listed: bool = False) -> None:
    """Run 1 with a child run in the same trace whose spans interleave with its own; `listed`:
    the run rows list their calls' span ids, as the deriver writes them (else NULL, as in rows
    derived before that column)."""
    root, child = run_row(1), run_row(1, span_id="c" * 16)
    child.update(run_id=rid(1)[:32] + "c" * 16, parent_run_id=rid(1), cost_usd=0.02)
    spans = [
        span(1, 3, "tool", 2.0, tool_name="search", tool_args='{"q":1}', tool_result="[]"),
        span(1, 1, "llm", 0.5, model="gpt-4o", provider="openai", input_tokens=10),
        span(1, 2, "llm", 1.0, model="gpt-4o", is_error=True, error_type="RateLimit"),
        span(1, 4, "tool", 1.5, tool_name="fetch", status_code=2, status_message="boom"),
        span(1, 5, "llm", 1.2, model="child-model"),  # the child's, between the root's
        span(1, 6, "agent", 0.0),  # the root's own run span: neither a call nor a tool
    ]
    if listed:
        by_start = sorted(spans[:4], key=lambda s: s["start_time_unix_nano"])
        root["call_span_ids"] = bytes.fromhex("".join(s["span_id"] for s in by_start))
        child["call_span_ids"] = bytes.fromhex(spans[4]["span_id"])
    insert(store, "runs", [root, child])
    insert(store, "spans", spans)
    insert(store, "span_runs", [span_run(s, rid(1)) for s in (*spans[:4], spans[5])])
    insert(store, "span_runs", [span_run(spans[4], child["run_id"])])


def _same(detail: rd.FullDetail | None, plain: qr.RunDetail | None) -> None:
    assert detail is not None and plain is not None
    assert detail.run == plain


@pytest.mark.parametrize("listed", [False, True])
def test_the_detail_equals_the_sequential_queries(store: Store, listed: bool) -> None:
    _shared_trace(store, listed=listed)
    detail = rd.get_detail(store, "acme", rid(1))
    _same(detail, qr.get_run(store, "acme", rid(1)))
    assert detail is not None
    assert [c.span_id[-1] for c in detail.run.llm_calls] == ["1", "2"]
    assert [t.tool_name for t in detail.run.tool_events] == ["fetch", "search"]
    assert detail.run.child_run_count == 1
    assert detail.run.combined_cost_usd == pytest.approx(0.001 + 0.02)
    assert detail.alert_events == [] and detail.evaluations == [] and detail.roi == []


def test_listed_calls_are_read_without_span_runs(store: Store) -> None:
    _shared_trace(store, listed=True)
    store.call(lambda cur: cur.execute("DELETE FROM span_runs"))
    detail = rd.get_detail(store, "acme", rid(1))
    assert detail is not None
    assert [c.span_id[-1] for c in detail.run.llm_calls] == ["1", "2"]
    assert [t.tool_name for t in detail.run.tool_events] == ["fetch", "search"]


@pytest.mark.parametrize("listed", [False, True])
def test_a_trace_with_too_many_calls_falls_back_to_the_join(
    store: Store, monkeypatch: pytest.MonkeyPatch, listed: bool
) -> None:
    _shared_trace(store, listed=listed)
    monkeypatch.setattr(qr, "MAX_TRACE_WINDOW_SPANS", 2)  # the trace has 5 LLM and tool spans
    assert qr.trace_window(store, "acme", qr.find_run(store, "acme", rid(1)) or ()) is None
    _same(rd.get_detail(store, "acme", rid(1)), qr.get_run(store, "acme", rid(1)))


def test_no_such_run_and_another_orgs_run_are_none(store: Store) -> None:
    _shared_trace(store)
    assert rd.get_detail(store, "acme", "nope") is None
    assert rd.get_detail(store, "acme", "0" * 48) is None
    assert rd.get_detail(store, "globex", rid(1)) is None


def test_alert_events_are_read_once_the_table_holds_a_row(store: Store) -> None:
    store.call(alerts_store.create_tables)
    assert rd.written_tables(store, ("alert_events", "no_such_table")) == set()
    insert(store, "runs", [run_row(1)])
    assert rd.get_detail(store, "acme", rid(1)).alert_events == []  # type: ignore[union-attr]

    def fire(cur: Any) -> None:
        cur.execute(
            """INSERT INTO alert_events (org, event_id, rule_id, rule_name, run_id,
               workflow_name, triggered_value, threshold_value, notification_sent, created_at)
               VALUES ('acme', 'ev-1', 'r-1', 'cost', ?, 'triage', 2.0, 1.0, false, ?)""",
            [rid(1), T0 + timedelta(minutes=2)],
        )

    store.call(fire)
    assert rd.written_tables(store, ("alert_events",)) == {"alert_events"}
    detail = rd.get_detail(store, "acme", rid(1))
    assert detail is not None and [e["id"] for e in detail.alert_events] == ["ev-1"]
    assert rd.get_detail(store, "globex", rid(1)) is None


def test_a_failure_on_either_reader_raises_and_nothing_waits_forever(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    _shared_trace(store)

    def boom(*_: object) -> None:
        raise RuntimeError("boom")

    with monkeypatch.context() as m:
        m.setattr(qr, "find_run", boom)  # before the side thread has the run's row
        with pytest.raises(RuntimeError, match="boom"):
            rd.get_detail(store, "acme", rid(1))
    with monkeypatch.context() as m:
        m.setattr(qr, "run_call_ids", boom)  # on the side thread
        with pytest.raises(RuntimeError, match="boom"):
            rd.get_detail(store, "acme", rid(1))
    # The store's readers are fine afterwards.
    _same(rd.get_detail(store, "acme", rid(1)), qr.get_run(store, "acme", rid(1)))
