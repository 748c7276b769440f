"""Tests for `collector/read/trace.py`: a run's trace in its window, with parents and excerpts,
scoped by org, capped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.read import trace as tr
from collector.store.writer import Store
from tests.collector.store.test_query import S, insert, span
from tests.stores import service_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with service_store(tmp_path) as s:
        yield s


def test_the_traces_spans_in_the_window_with_parents_and_cut_excerpts(store: Store) -> None:
    root = span(1, 0, "agent", 0.0)
    spans = [
        root,
        span(1, 1, "llm", 0.5, parent_span_id=root["span_id"], input_text="x" * 5000),
        span(
            1,
            2,
            "tool",
            1.0,
            parent_span_id=root["span_id"],
            status_code=2,
            status_message="boom",
            tool_args="{}",
        ),
        span(1, 3, "llm", 3 * 3600.0),  # hours later: outside the window
        span(1, 4, "llm", 0.7, org="globex"),
    ]
    insert(store, "spans", spans)
    start = root["start_time_unix_nano"]
    with store.reader() as r:
        got = tr.run_trace(r, "acme", root["trace_id"], start, start + 2 * S)
    assert [s.span_id[-1] for s in got.spans] == ["0", "1", "2"] and not got.truncated
    assert got.spans[1].parent_span_id == root["span_id"]
    assert len(got.spans[1].input_text or "") == tr.EXCERPT_CHARS
    assert got.spans[2].failed and got.spans[2].error == "boom"


def test_the_span_count_is_capped(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tr, "MAX_TRACE_SPANS", 3)
    insert(store, "spans", [span(1, i, "tool", i / 10) for i in range(5)])
    first = span(1, 0, "tool", 0.0)["start_time_unix_nano"]
    with store.reader() as r:
        got = tr.run_trace(r, "acme", f"{1:032x}", first, first + S)
    assert len(got.spans) == 3 and got.truncated
