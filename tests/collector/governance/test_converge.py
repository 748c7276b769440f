"""The span convergence job: a span committed twice (by two nodes) is left once in `spans`, in
the transaction that moves its watermark; a store without copies gets no snapshot from it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from collector.governance.converge import SpanConvergence
from collector.store.writer import Store
from tests.collector.runs.test_derive import agent, append, llm, settings


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    # No dedup window: every append lands, as a re-send to another node of a cluster does.
    s = Store(replace(settings(tmp_path), dedup_window_s=0))
    s.open()
    try:
        yield s
    finally:
        s.close()


def _counts(store: Store) -> tuple[int, int]:
    found = store.query("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans")
    return int(found[0][0]), int(found[0][1])


def _snapshot(store: Store) -> int:
    return int(store.query("SELECT id FROM lake.current_snapshot()")[0][0])


def test_a_span_stored_twice_is_left_once(store: Store) -> None:
    trace = "ab" * 16
    job = SpanConvergence(store)
    append(store, [agent(trace, 1), llm(trace, 2, 1), llm(trace, 3, 1)])
    before = _snapshot(store)
    assert job.step() == 0
    assert _snapshot(store) == before  # nothing doubled: no snapshot of its own
    append(store, [llm(trace, 2, 1), llm(trace, 3, 1)])  # the retry another node took
    append(store, [llm(trace, 3, 1)])
    assert _counts(store) == (6, 3)
    assert job.step() == 3
    assert _counts(store) == (3, 3)
    assert job.step() == 0
    marks = dict(store.query("SELECT name, snapshot_id FROM watermarks"))
    assert marks["spans-dedup"] >= before
