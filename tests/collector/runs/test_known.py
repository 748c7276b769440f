"""Tests for `collector/runs/known.py`: the traces the run deriver knows, their extents, what
it proves new, and what it forgets (times in ns, given explicitly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from collector.runs.known import KnownTraces
from collector.store.lake import StoreSettings, connect

H = 3_600_000_000_000  # an hour in ns
DAY = 24 * H


def u64(*v: int) -> np.ndarray:
    return np.asarray(v, dtype=np.uint64)


def i64(*v: int) -> np.ndarray:
    return np.asarray(v, dtype=np.int64)


def loaded(now: int, max_trace: int = 8 * H, **kw: int) -> KnownTraces:
    known = KnownTraces(max_trace, **kw)
    known.covered_from = now - max_trace - max_trace // 8  # as `load` on an empty store
    return known


def test_a_trace_not_held_is_new_only_if_its_other_spans_would_be_covered() -> None:
    now = 100 * DAY
    known = loaded(now)  # covers starts from 9 h ago
    assert known.covered_from == now - 9 * H
    # Changed spans that started now: any other span of theirs started within 8 h: covered.
    # Started 2 h ago: another span may have started 10 h ago, before the coverage.
    assert known.is_new(i64(now, now - H, now - 2 * H)).tolist() == [True, True, False]


def test_extents_grow_with_every_add() -> None:
    now = 100 * DAY
    known = loaded(now)
    known.add(u64(7, 8), i64(now - 10, now - 5), i64(now - 9, now - 5), now)
    known.add(u64(7), i64(now - 3), i64(now - 1), now + 1)
    found, lo, hi = known.find(u64(7, 8, 9))
    assert found.tolist() == [True, True, False]
    assert lo[:2].tolist() == [now - 10, now - 5] and hi[:2].tolist() == [now - 1, now - 5]


def test_traces_past_the_longest_trace_are_forgotten_and_coverage_follows() -> None:
    now = 100 * DAY
    known = loaded(now)  # epochs of an hour, kept 9 h
    known.add(u64(1), i64(now), i64(now), now)
    known.add(u64(2), i64(now), i64(now + 30 * H), now)  # a span that starts in the future
    later = now + 11 * H
    known.add(u64(3), i64(later), i64(later), later)
    found, _, _ = known.find(u64(1, 2, 3))
    assert found.tolist() == [False, True, True]  # 2 is still running: carried forward
    assert known.covered_from == now + 1


def test_past_the_cap_the_oldest_go_and_coverage_moves_up() -> None:
    now = 100 * DAY
    known = loaded(now, max_traces=4)
    known.add(u64(1, 2, 3), i64(now, now, now), i64(now, now, now + 5), now)
    known.add(u64(4, 5, 6), i64(now + H, now + H, now + H), i64(now + H, now + H, now + H), now + H)
    assert len(known) <= 4
    assert known.find(u64(4, 5, 6))[0].all()
    assert known.covered_from == now + 6


def test_load_reads_spans_runs_and_span_runs_of_the_kept_time(tmp_path: Path) -> None:
    con = connect(StoreSettings(str(tmp_path / "c.ducklake"), str(tmp_path / "d") + "/"))
    con.execute("USE lake")
    for table in ("spans", "span_runs"):
        cols = "org VARCHAR, trace_id VARCHAR, start_time_unix_nano BIGINT"
        con.execute(f"CREATE TABLE {table} ({cols})")
    con.execute("CREATE TABLE runs (org VARCHAR, trace_id VARCHAR, started_at TIMESTAMPTZ)")
    now = 100 * DAY
    spans = [("a", "t1", now - H), ("a", "t1", now - 2 * H), ("b", "t1", now - H)]
    spans.append(("a", "old", now - 20 * H))  # before the kept 9 h
    con.executemany("INSERT INTO spans VALUES (?, ?, ?)", spans)
    con.execute("INSERT INTO span_runs VALUES ('a', 't1', ?)", [now - 3 * H])
    started = (now - 4 * H) // 1000
    con.execute("INSERT INTO runs VALUES ('a', 't1', make_timestamptz(?::BIGINT))", [started])
    known = KnownTraces(8 * H)
    known.load(con, now)
    assert len(known) == 2
    found_keys = con.execute("SELECT hash('a', 't1'), hash('b', 't1')").fetchone()
    assert found_keys is not None
    found, lo, hi = known.find(np.asarray(found_keys, dtype=np.uint64))
    assert found.all()
    assert lo.tolist() == [now - 4 * H, now - H] and hi.tolist() == [now - H, now - H]
    assert known.covered_from == now - 9 * H
