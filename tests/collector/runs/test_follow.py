"""Tests for `collector/runs/follow.py`: spans appended to a real DuckLake store, runs derived by
the real deriver, and consumers fed from the runs change feed exactly once, across restarts.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from collector.runs.feed import current_snapshot
from collector.runs.follow import RunFollower
from collector.store.writer import Store
from tests.collector.runs.test_derive import T1, T2, agent, append, deriver, llm, settings, sid


class Recorder:
    """A consumer that stores the run ids it is handed in a table of its own, so what it saw
    is committed (or rolled back) with the watermark."""

    def __init__(self, name: str = "recorder", fail: bool = False) -> None:
        self._name = name
        self.fail = fail
        self.ticks = 0
        self.after = 0

    @property
    def name(self) -> str:
        return self._name

    def create_tables(self, cur: duckdb.DuckDBPyConnection) -> None:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS seen_{self._name} (run_id VARCHAR, status VARCHAR)"
        )

    def consume(self, cur: duckdb.DuckDBPyConnection, runs: list[dict[str, Any]], now: int) -> None:
        self.ticks += 1
        for run in runs:
            cur.execute(
                f"INSERT INTO seen_{self._name} VALUES (?, ?)", [run["run_id"], run["status"]]
            )
        if self.fail and runs:
            raise RuntimeError("consumer broke")

    async def after_commit(self) -> None:
        self.after += 1

    def due(self) -> bool:
        return False


def seen(store: Store, name: str = "recorder") -> list[tuple[Any, ...]]:
    return store.query(f"SELECT run_id, status FROM seen_{name} ORDER BY run_id, status")


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(settings(tmp_path))
    s.open()
    try:
        yield s
    finally:
        s.close()


def test_finished_runs_are_handed_once_and_again_after_rederivation(store: Store) -> None:
    d = deriver(store)
    d.create_tables()
    rec = Recorder()
    follower = RunFollower(store, [rec])
    follower.create_tables()

    append(store, [llm(T1, 2, 1)])  # the root has not arrived: a running run
    d.step()
    assert follower.step() == 0
    assert seen(store) == []

    append(store, [agent(T1, 1)])
    d.step()
    assert follower.step() == 1
    assert seen(store) == [(T1 + sid(1), "success")]
    assert follower.step() == 0  # nothing new: nothing handed twice
    assert rec.ticks == 2  # an idle step hands nothing and writes nothing (no snapshot)

    append(store, [llm(T1, 3, 1)])  # a late span re-derives the finished run
    d.step()
    assert follower.step() == 1
    assert seen(store) == [(T1 + sid(1), "success")] * 2


def test_a_new_consumer_starts_at_the_current_snapshot(store: Store) -> None:
    d = deriver(store)
    d.create_tables()
    append(store, [agent(T1, 1)])
    d.step()
    late = Recorder("late")
    follower = RunFollower(store, [late])
    follower.create_tables()
    assert follower.step() == 0  # history is not replayed
    append(store, [agent(T2, 1)])
    d.step()
    follower.step()
    assert seen(store, "late") == [(T2 + sid(1), "success")]


def test_watermark_survives_a_restart_of_the_follower(store: Store) -> None:
    d = deriver(store)
    d.create_tables()
    RunFollower(store, [Recorder()]).create_tables()
    append(store, [agent(T1, 1)])
    d.step()
    RunFollower(store, [Recorder()]).step()
    append(store, [agent(T2, 1)])
    d.step()
    again = RunFollower(store, [Recorder()])  # a new process: same watermark in the store
    again.create_tables()
    assert again.step() == 1
    assert seen(store) == [(T1 + sid(1), "success"), (T2 + sid(1), "success")]


def test_a_failing_consumer_commits_nothing_and_does_not_block_the_others(store: Store) -> None:
    d = deriver(store)
    d.create_tables()
    broken, fine = Recorder("broken", fail=True), Recorder("fine")
    follower = RunFollower(store, [broken, fine])
    follower.create_tables()
    append(store, [agent(T1, 1)])
    d.step()
    assert follower.step() == 1  # only `fine` took them
    assert seen(store, "broken") == []  # its insert rolled back with the step
    assert seen(store, "fine") == [(T1 + sid(1), "success")]
    broken.fail = False
    assert follower.step() == 1  # the same runs come again
    assert seen(store, "broken") == [(T1 + sid(1), "success")]


def test_consumers_at_one_watermark_commit_in_one_transaction(store: Store) -> None:
    d = deriver(store)
    d.create_tables()
    names = ("alerts", "roi", "rules")
    follower = RunFollower(store, [Recorder(n) for n in names])
    follower.create_tables()
    append(store, [agent(T1, 1)])
    d.step()
    before = current_snapshot(store)
    assert follower.step() == 3
    # One snapshot for the three consumers' writes and watermark moves (a transaction each
    # cost the writer thread tens of ms under load).
    assert current_snapshot(store) == before + 1
    for name in names:
        assert seen(store, name) == [(T1 + sid(1), "success")]
    assert follower.step() == 0  # all three watermarks moved


def test_a_backlog_is_worked_off_in_bounded_steps(store: Store) -> None:
    d = deriver(store)
    d.create_tables()
    rec = Recorder()
    follower = RunFollower(store, [rec], max_snapshots=1)
    follower.create_tables()
    append(store, [agent(T1, 1)])
    d.step()
    append(store, [agent(T2, 1)])
    d.step()
    handed = 0
    for _ in range(10):
        handed += follower.step()
        if not follower.behind:
            break
    assert handed == 2
    assert len(seen(store)) == 2


def test_run_forever_steps_and_calls_after_commit(store: Store) -> None:
    d = deriver(store)
    d.create_tables()
    rec = Recorder()
    follower = RunFollower(store, [rec], interval_s=0.01)
    follower.create_tables()
    append(store, [agent(T1, 1)])
    d.step()

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(follower.run_forever(stop))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if rec.after >= 2:
                break
        stop.set()
        await task

    asyncio.run(go())
    assert rec.after >= 2
    assert seen(store) == [(T1 + sid(1), "success")]


def test_run_forever_steps_at_most_once_a_gap_however_often_commits_land(store: Store) -> None:
    # Ingest commits land every few milliseconds under load; runs change only when the deriver
    # commits. Woken by each commit, the follower read the runs feed at each: the gap bounds it.
    d = deriver(store)
    d.create_tables()
    rec = Recorder()
    follower = RunFollower(store, [rec], interval_s=60.0, min_gap_s=0.4)
    follower.create_tables()

    async def go() -> float:
        stop = asyncio.Event()
        began = time.monotonic()
        task = asyncio.create_task(follower.run_forever(stop))
        await asyncio.sleep(0.05)
        for i in range(20):  # ~1 s of commits, each waking the follower
            await asyncio.to_thread(append, store, [agent(T2, 100 + i)])
            await asyncio.sleep(0.05)
        await asyncio.to_thread(d.step)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if seen(store):
                break
        stop.set()
        await task
        return time.monotonic() - began

    took = asyncio.run(go())
    # The first step at start, then at most one per 0.4 s gap: 20 or more without the gap.
    assert 2 <= rec.after <= 2 + took / 0.4
    assert [r[1] for r in seen(store)] == ["success"] * 20  # each agent span is a run


def test_consumer_names_must_be_unique(store: Store) -> None:
    with pytest.raises(ValueError, match="unique"):
        RunFollower(store, [Recorder("x"), Recorder("x")])


def test_idle_steps_write_no_snapshots_and_idle_watermarks_move_now_and_then(
    store: Store,
) -> None:
    d = deriver(store)
    d.create_tables()
    now = [0.0]
    follower = RunFollower(
        store, [Recorder("a"), Recorder("b")], idle_move_s=10, monotonic=lambda: now[0]
    )
    follower.create_tables()

    def snapshot() -> int:
        return int(store.query("SELECT id FROM lake.current_snapshot()")[0][0])

    append(store, [agent(T1, 1)])
    d.step()
    follower.step()  # hands out the run, moves both watermarks
    settled = snapshot()
    for _ in range(3):  # only the followers' own snapshots since: no churn
        now[0] += 1
        follower.step()
    assert snapshot() == settled
    # Other writes without runs (ingest, key usage) move an idle watermark only now and then,
    # so snapshot expiry, which waits for the smallest watermark, is not held back for long.
    store.call(lambda cur: cur.execute("INSERT INTO watermarks VALUES ('other', 0, now())"))
    follower.step()
    assert snapshot() == settled + 1
    now[0] += 10
    follower.step()
    marks = dict(store.query("SELECT name, snapshot_id FROM watermarks"))
    assert marks["a"] >= settled + 1 and marks["b"] >= settled + 1


def test_a_follower_with_nothing_to_read_is_not_behind(store: Store) -> None:
    # Only the followers' own snapshots since the watermark: nothing to read, so the loop must
    # wait for its interval rather than step again at once (a busy loop, at 100% CPU).
    d = deriver(store)
    d.create_tables()
    follower = RunFollower(store, [Recorder("a"), Recorder("b")])
    follower.create_tables()
    append(store, [agent(T1, 1)])
    d.step()
    for _ in range(3):
        follower.step()
        assert not follower.behind


def test_idle_steps_do_not_read_the_same_snapshots_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = deriver(store)
    d.create_tables()
    recorder = Recorder("a")
    follower = RunFollower(store, [recorder])
    follower.create_tables()
    append(store, [agent(T1, 1)])
    d.step()
    follower.step()
    store.call(lambda cur: cur.execute("INSERT INTO watermarks VALUES ('other', 0, now())"))
    follower.step()  # reads the other write's snapshot: no run in it
    feeds: list[str] = []
    plain_cursor, plain_query = store.cursor, store.query

    def cursor() -> duckdb.DuckDBPyConnection:
        feeds.append("follower")  # the follower reads the runs feed on a cursor of its own
        return plain_cursor()

    def query(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        if "ducklake_table_changes" in sql:
            feeds.append("deriver")
        return plain_query(sql, params)

    monkeypatch.setattr(store, "cursor", cursor)
    monkeypatch.setattr(store, "query", query)
    for _ in range(3):
        d.step()
        follower.step()
    assert feeds == ["deriver"]  # the deriver's first look at the other write, then nothing
    append(store, [agent(T2, 1)])  # new spans: both read again, and the run is handed out
    d.step()
    follower.step()
    assert "follower" in feeds and feeds.count("deriver") == 2
    assert [r[0][:32] for r in seen(store, "a")] == [T1, T2]
