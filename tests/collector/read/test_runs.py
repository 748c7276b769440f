"""Tests for `collector/read/runs.py`'s run list read in two steps (the count and the page's
floor, then the page above it): every sort pages as a plain ORDER BY would, ties and cursors
included, and a floor read before the runs changed is not trusted. A real DuckLake store.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.read import runs as qr
from collector.store.readers import Params
from collector.store.writer import Store
from tests.collector.store.test_query import T0, WIDE, insert, rid, run_row
from tests.stores import service_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with service_store(tmp_path) as s:
        yield s


def expected(store: Store, sort: str, where: qr.RunFilter) -> list[str]:
    """Every matching run id in `sort` order, ties by run id the same way: the whole list."""
    s = qr.SORTS[sort]
    direction = "DESC" if s.desc else "ASC"
    sql = f"""SELECT run_id FROM runs WHERE org = $org AND started_at BETWEEN $start AND $end
        AND ($statuses::VARCHAR[] IS NULL OR list_contains($statuses::VARCHAR[], status))
        ORDER BY {s.key_sql} {direction}, run_id {direction}"""
    params = {k: v for k, v in where.params().items() if k in ("org", "start", "end", "statuses")}
    return [str(r[0]) for r in store.query(sql, params)]


def pages(store: Any, sort: str, limit: int, where: qr.RunFilter) -> list[list[str]]:
    out: list[list[str]] = []
    after = None
    for _ in range(50):
        page = qr.list_runs(store, where, sort, after, limit)
        out.append([r.id for r in page.runs])
        if page.next_position is None:
            return out
        after = page.next_position
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("sort", list(qr.SORTS))
def test_every_sort_pages_through_ties_as_one_ordered_list(store: Store, sort: str) -> None:
    # Costs and durations repeat (ties across page edges); a running run has neither.
    rows = [
        run_row(n, cost_usd=float(n % 3), status="error" if n % 4 == 0 else "success")
        | {"duration_ms": 1000 * (n % 5), "started_at": T0 + timedelta(minutes=n // 2)}
        for n in range(1, 24)
    ]
    rows.append(run_row(30, status="running"))
    insert(store, "runs", rows)
    for where in (qr.RunFilter("acme", WIDE), qr.RunFilter("acme", WIDE, statuses=("error",))):
        want = expected(store, sort, where)
        for limit in (1, 2, 5, 100):
            got = pages(store, sort, limit, where)
            assert [i for p in got for i in p] == want
            assert all(len(p) == limit for p in got[:-1]) and 0 < len(got[-1]) <= limit
        assert qr.list_runs(store, where, sort, None, 2).total_count == len(want)


class ChangesAfterTheFirstRead:
    """Reads on no one snapshot: after the first query (the count and floor), the newest runs
    go (as an org's data deleted by an admin would) before the page is read."""

    def __init__(self, store: Store) -> None:
        self.store, self.reads = store, 0

    def query(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        rows = self.store.query(sql, params)
        self.reads += 1
        if self.reads == 1:
            self.store.call(
                lambda cur: cur.execute("DELETE FROM runs WHERE run_id IN (?, ?)", [rid(4), rid(5)])
            )
        return rows


def test_a_floor_read_before_the_runs_changed_is_not_trusted(store: Store) -> None:
    insert(store, "runs", [run_row(n) for n in range(1, 6)])  # run n started at minute n
    reads = ChangesAfterTheFirstRead(store)
    # The floor was the third newest's start: from it on, only run 3 is left, which is no page.
    page = qr.list_runs(reads, qr.RunFilter("acme", WIDE), "started_at_desc", None, 2)
    assert [r.id for r in page.runs] == [rid(3), rid(2)]
    assert page.next_position is not None
    assert page.total_count == 5  # as counted on the first read
