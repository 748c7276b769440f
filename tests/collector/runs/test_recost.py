"""Run totals brought in line with re-priced calls: the runs of the given traces get the cost
their stored spans add up to now, nothing else of theirs changes, other runs are untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from collector.runs.recost import RunTotals
from collector.store.writer import Store
from processors.runs.assemble import RunsConfig
from tests.collector.runs.test_derive import (
    T0,
    T1,
    T2,
    S,
    agent,
    append,
    deriver,
    llm,
    settings,
    sid,
    tool,
)

TOTALS = RunTotals(RunsConfig())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(settings(tmp_path))
    s.open()
    try:
        yield s
    finally:
        s.close()


def runs(store: Store) -> list[tuple[object, ...]]:
    return store.query(
        "SELECT trace_id, round(cost_usd, 6), round(tool_cost_usd, 6), cost_unknown_calls, "
        "status, llm_call_count FROM runs ORDER BY trace_id"
    )


def test_the_runs_of_re_priced_traces_get_their_new_totals(store: Store) -> None:
    append(store, [agent(T1, 1), llm(T1, 2, 1), llm(T1, 3, 1, cost_usd=None), tool(T1, 4, 1)])
    append(store, [agent(T2, 1), llm(T2, 2, 1)])
    deriver(store).step()
    before = runs(store)
    assert before == [(T1, 0.01, 0.0, 1, "success", 2), (T2, 0.01, 0.0, 0, "success", 1)]

    # What `prices recompute` does to the calls: the unknown one priced, the tool priced.
    store.call(
        lambda cur: cur.execute(
            "UPDATE spans SET cost_usd = CASE span_id WHEN ? THEN 0.5 ELSE 0.02 END, "
            "cost_source = 'computed' WHERE trace_id = ? AND span_id IN (?, ?)",
            [sid(3), T1, sid(3), sid(4)],
        )
    )
    window = {T1: (T0 + 3 * S, T0 + 4 * S)}
    assert store.call(lambda cur: TOTALS.update(cur, "acme", window)) == 1
    assert runs(store) == [(T1, 0.53, 0.02, 0, "success", 2), before[1]]
    # Already in line: nothing changes; another org's traces are not these.
    assert store.call(lambda cur: TOTALS.update(cur, "acme", window)) == 0
    assert store.call(lambda cur: TOTALS.update(cur, "globex", window)) == 0
    assert store.call(lambda cur: TOTALS.update(cur, "acme", {})) == 0


def test_a_store_whose_runs_were_never_derived(store: Store) -> None:
    append(store, [agent(T1, 1), llm(T1, 2, 1)])
    assert store.call(lambda cur: TOTALS.update(cur, "acme", {T1: (T0, T0)})) == 0
    with pytest.raises(duckdb.CatalogException, match="runs"):
        store.query("SELECT count(*) FROM runs")
