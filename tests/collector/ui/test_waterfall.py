"""Tests for `collector/ui/waterfall.py`: tree order and depth under the run's span, offsets and
widths on one time axis, child runs linked, a parent cycle drawn once, the step cap."""

from __future__ import annotations

from typing import Any

from collector.read.trace import TraceSpan
from collector.ui.waterfall import layout

MS = 1_000_000


def span(
    sid: str, parent: str | None, kind: str, start_ms: int, end_ms: int, **kw: Any
) -> TraceSpan:
    fields: dict[str, Any] = dict.fromkeys(TraceSpan.__dataclass_fields__)
    fields.update(
        span_id=sid,
        parent_span_id=parent,
        span_type=kind,
        name=f"{kind} {sid}",
        failed=False,
        start_ns=start_ms * MS,
        end_ns=end_ms * MS,
    )
    fields.update(kw)
    return TraceSpan(**fields)


def test_steps_nest_in_start_order_on_one_axis() -> None:
    spans = [
        span("t2", "l1", "tool", 60, 80, tool_name="search"),
        span("a", None, "agent", 0, 100, agent_name="triage"),
        span("l1", "a", "llm", 10, 50, model="gpt-4o"),
        span("l2", "a", "llm", 85, 100, model="gpt-4o-mini"),
        span("x", None, "agent", 0, 5),  # another run's root in the same trace
    ]
    w = layout(spans, "a")
    assert [(s.span.span_id, s.depth) for s in w.steps] == [
        ("a", 0),
        ("l1", 1),
        ("t2", 2),
        ("l2", 1),
    ]
    assert [s.label for s in w.steps] == ["triage", "gpt-4o", "search", "gpt-4o-mini"]
    llm = w.steps[1]
    assert (llm.left_pct, llm.width_pct, llm.duration_ms) == (10.0, 40.0, 40.0)
    assert w.total_ms == 100.0 and [t.label for t in w.ticks] == [
        "0 ms",
        "25 ms",
        "50 ms",
        "75 ms",
        "100 ms",
    ]
    assert w.hidden == 0


def test_a_child_runs_agent_span_links_to_it() -> None:
    spans = [span("a", None, "agent", 0, 10), span("c", "a", "agent", 2, 8)]
    w = layout(spans, "a", {"c": "trace" + "c", "a": "trace" + "a"})
    assert [s.child_run_id for s in w.steps] == [None, "tracec"]  # not the run itself


def test_without_the_runs_span_each_orphan_starts_a_tree() -> None:
    spans = [span("l1", "gone", "llm", 0, 10), span("t1", "l1", "tool", 2, 4)]
    w = layout(spans, "missing")
    assert [(s.span.span_id, s.depth) for s in w.steps] == [("l1", 0), ("t1", 1)]


def test_cycles_unfinished_spans_and_the_cap() -> None:
    spans = [span("a", "b", "agent", 0, 10), span("b", "a", "llm", 1, 2)]
    w = layout(spans, "a")
    assert [s.span.span_id for s in w.steps] == ["a", "b"]
    running = layout(
        [span("a", None, "agent", 0, 10), span("l", "a", "llm", 5, 5, end_ns=None)], "a"
    )
    assert running.steps[1].duration_ms is None and running.steps[1].width_pct > 0
    many = [span("a", None, "agent", 0, 100)] + [
        span(f"s{i}", "a", "tool", i, i + 1) for i in range(30)
    ]
    capped = layout(many, "a", max_steps=10)
    assert len(capped.steps) == 10 and capped.hidden == 21


def test_no_spans_no_steps() -> None:
    assert layout([], "a").steps == []
