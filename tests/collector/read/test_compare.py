"""Tests for `collector/read/compare.py`: two runs and their spans inserted by hand into a tmp
DuckLake store, compared; the alignment, deltas and tool edit scripts are worked out by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from collector.auth.settings import PerOrgSettings
from collector.read import compare as qc
from collector.store.writer import Store
from tests.collector.store.test_query import S, insert, rid, run_row, span, span_run
from tests.stores import service_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with service_store(tmp_path) as s:
        yield s


def set_org(store: Store, org: str, settings: str | None) -> None:
    store.call(
        lambda cur: cur.execute(
            "INSERT INTO orgs VALUES (?, ?, ?)", [org, datetime.now(UTC), settings]
        )
    )


def test_compare_is_on_unless_the_org_setting_says_false(store: Store) -> None:
    settings = PerOrgSettings(store, [qc.SETTINGS])
    assert qc.compare_enabled(settings.document_now("nobody"))  # no org row at all
    cases = {
        "empty": "{}",
        "on": '{"compare_enabled": true}',
        "off": '{"compare_enabled": false}',
        "other": '{"retention_days": 7}',
        "falsy": '{"compare_enabled": 0}',  # only the JSON `false` turns it off
        "null": None,
    }
    for org, value in cases.items():
        set_org(store, org, value)
    assert {org: qc.compare_enabled(settings.document_now(org)) for org in cases} == {
        "empty": True,
        "on": True,
        "off": False,
        "other": True,
        "falsy": True,
        "null": True,
    }


def two_runs(store: Store) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Run 1 (A): llm gpt-4o, search, llm, fetch. Run 2 (B): llm gpt-4o-mini, fetch, search,
    search, llm. Spans last 250 ms unless said; offsets are seconds from the run's start."""
    insert(store, "runs", [run_row(1, input_tokens=30, output_tokens=5), run_row(2)])
    insert(store, "runs", [run_row(3, org="globex")])
    a = [
        span(1, 1, "llm", 0.5, model="gpt-4o", input_tokens=10, output_tokens=2, cost_usd=0.01),
        span(1, 2, "tool", 1.0, tool_name="search"),
        span(1, 3, "llm", 1.5, model="gpt-4o", input_tokens=20, output_tokens=3, cost_usd=0.02),
        span(1, 4, "tool", 2.0, tool_name="fetch"),
        span(1, 5, "agent", 0.0),  # neither an LLM call nor a tool: not a step
    ]
    b = [
        span(2, 1, "llm", 0.5, model="gpt-4o-mini", input_tokens=12, output_tokens=1),
        span(2, 2, "tool", 0.8, tool_name="fetch", is_error=True),
        span(2, 3, "tool", 1.0, tool_name="search"),
        span(2, 4, "tool", 1.2, tool_name="search"),
        span(2, 5, "llm", 2.0, model="gpt-4o", input_tokens=5, output_tokens=5, cost_usd=0.005),
    ]
    b[2]["end_time_unix_nano"] = b[2]["start_time_unix_nano"] + S  # B's first search: 1 s
    insert(store, "spans", a + b)
    insert(store, "span_runs", [span_run(s, rid(1)) for s in a] + [span_run(s, rid(2)) for s in b])
    rows = qc.load_runs(store, "acme", rid(1), rid(2))
    return rows[rid(1)], rows[rid(2)]


def test_load_runs_sees_only_the_orgs_own_runs(store: Store) -> None:
    two_runs(store)
    assert set(qc.load_runs(store, "acme", rid(1), rid(3))) == {rid(1)}
    assert set(qc.load_runs(store, "globex", rid(1), rid(3))) == {rid(3)}
    assert qc.load_runs(store, "acme", "nope", "nope") == {}


def test_steps_align_llm_calls_by_order_and_tools_by_name_and_occurrence(store: Store) -> None:
    row_a, row_b = two_runs(store)
    c = qc.compare_runs(store, "acme", row_a, row_b)
    assert c.a.input_tokens == 30 and c.a.output_tokens == 5
    assert [s.name for s in c.a.steps] == ["gpt-4o", "search", "gpt-4o", "fetch"]

    def ends(p: qc.StepPair) -> tuple[str | None, str | None]:
        return (p.a.span_id[-1] if p.a else None, p.b.span_id[-1] if p.b else None)

    # In A's time order, then B's extra search where B has it (1.2 s, after A's search at 1.0).
    assert [(p.kind, ends(p)) for p in c.steps] == [
        ("llm", ("1", "1")),  # first calls, though the model changed
        ("tool", ("2", "3")),  # A's search with B's first search
        ("tool", (None, "4")),  # B's second search has no counterpart
        ("llm", ("3", "5")),
        ("tool", ("4", "2")),  # fetch with fetch, though B called it first
    ]
    first = c.steps[0]
    assert first.a is not None and first.b is not None
    assert (first.a.model, first.b.model) == ("gpt-4o", "gpt-4o-mini")
    assert first.b.cost_usd is None  # unknown cost stays unknown
    search = c.steps[1]
    assert search.a is not None and search.b is not None
    assert (search.a.duration_ms, search.b.duration_ms) == (250.0, 1000.0)
    assert (search.a.offset_ms, search.b.offset_ms) == (1000.0, 1000.0)
    assert c.steps[4].b is not None and c.steps[4].b.failed


def test_tool_diff_of_the_two_runs(store: Store) -> None:
    c = qc.compare_runs(store, "acme", *two_runs(store))
    t = c.tools
    assert (t.sequence_a, t.sequence_b) == (["search", "fetch"], ["fetch", "search", "search"])
    # fetch moved ahead of search, and B calls search once more.
    assert t.added == ["search"] and t.removed == [] and t.reordered == ["fetch"]
    a, b = t.sequence_a, t.sequence_b
    script = [(e.op, a[e.a_start : e.a_end], b[e.b_start : e.b_end]) for e in t.edits]
    assert script == [
        ("insert", [], ["fetch"]),
        ("equal", ["search"], ["search"]),
        ("replace", ["fetch"], ["search"]),
    ]
    assert t.distance == 2


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (["x", "y"], ["x", "y"], ([], [], [], 0)),
        ([], [], ([], [], [], 0)),
        (["x"], [], ([], ["x"], [], 1)),
        (["x", "y", "z"], ["z", "x", "y"], ([], [], ["z"], 2)),
        (["x", "y"], ["x", "w"], (["w"], ["y"], [], 1)),
        (["x", "x", "x"], ["x"], ([], ["x", "x"], [], 2)),
    ],
)
def test_diff_tools_cases(
    a: list[str], b: list[str], expected: tuple[list[str], list[str], list[str], int]
) -> None:
    """expected: (added, removed, reordered, edit distance)."""
    t = qc.diff_tools(a, b)
    assert (t.added, t.removed, t.reordered, t.distance) == expected
    # Replaying the script on A gives B.
    out: list[str] = []
    for e in t.edits:
        out += b[e.b_start : e.b_end] if e.op != "delete" else []
    assert out == b
