"""Tests for `collector/runs/feed.py`: a watermark's windows over a real DuckLake store's
snapshots, its move inside a transaction (and refusal when another stepper moved it first), and
the step loop's pacing, failures and pauses.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import duckdb
import pytest

from collector.model import StoreUnavailable
from collector.runs.feed import (
    Feed,
    WatermarkMoved,
    Window,
    current_snapshot,
    move_feeds,
    run_steps,
)
from collector.store.watermarks import read_watermark
from collector.store.writer import Store
from tests.collector.runs.test_derive import settings


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(settings(tmp_path))
    s.open()
    try:
        yield s
    finally:
        s.close()


def snapshots(store: Store, n: int) -> None:
    """`n` commits, each a snapshot of its own."""
    store.call(lambda cur: cur.execute("CREATE TABLE IF NOT EXISTS ticks (i INTEGER)"))
    for i in range(n):
        store.call(lambda cur, i=i: cur.execute("INSERT INTO ticks VALUES (?)", [i]))


def test_windows_start_before_the_first_snapshot_and_are_bounded(store: Store) -> None:
    feed = Feed(store, "t", max_snapshots=3)
    assert feed.position() == -1
    snapshots(store, 5)
    now = current_snapshot(store)
    window = feed.window()
    assert window == Window(-1, 2, now)
    assert window.behind and not window.empty
    store.call(lambda cur: feed.move(cur, window))
    feed.committed(window)
    assert feed.position() == 2
    assert read_watermark(store.cursor(), "t") == 2
    last = feed.window()
    assert (last.since, last.until, last.behind) == (2, min(5, now), now > 5)


def test_a_caught_up_window_is_empty_and_moves_nothing(store: Store) -> None:
    feed = Feed(store, "t", max_snapshots=100)
    snapshots(store, 2)
    window = feed.window()
    store.call(lambda cur: feed.move(cur, window))
    feed.committed(window)
    moved = current_snapshot(store)  # the move is a snapshot of its own
    held = feed.window(current=window.until)
    assert held.empty and not held.behind
    store.call(lambda cur: feed.move(cur, held))  # checks the position, writes nothing
    assert read_watermark(store.cursor(), "t") == window.until
    assert current_snapshot(store) == moved
    assert window.hold() == Window(window.since, window.since, window.current)
    assert window.shrink(0) == Window(window.since, 0, window.current)


def test_a_move_after_another_stepper_moved_it_fails_and_commits_nothing(store: Store) -> None:
    mine, theirs = Feed(store, "t", max_snapshots=100), Feed(store, "t", max_snapshots=100)
    snapshots(store, 3)
    window = mine.window()
    assert theirs.window() == window
    store.call(lambda cur: theirs.move(cur, window))

    def step(cur: duckdb.DuckDBPyConnection) -> None:
        cur.execute("INSERT INTO ticks VALUES (99)")  # the step's own work, rolled back
        mine.move(cur, window)

    with pytest.raises(WatermarkMoved):
        store.call(step)
    assert store.query("SELECT count(*) FROM ticks WHERE i = 99") == [(0,)]
    mine.forget()
    assert mine.position() == window.until  # read again from the store


def test_a_move_from_a_stored_position_fails_if_another_stepper_moved_it(store: Store) -> None:
    first = Feed(store, "t", max_snapshots=2)
    snapshots(store, 6)
    start = first.window()
    store.call(lambda cur: first.move(cur, start))
    mine, theirs = Feed(store, "t", max_snapshots=2), Feed(store, "t", max_snapshots=2)
    window = mine.window()
    assert window.since == start.until >= 0 and theirs.window() == window
    store.call(lambda cur: theirs.move(cur, window))
    later = Window(window.until, window.until + 1, window.current)
    store.call(lambda cur: theirs.move(cur, later))  # moved on twice: no row at `since`

    def step(cur: duckdb.DuckDBPyConnection) -> None:
        cur.execute("INSERT INTO ticks VALUES (99)")
        mine.move(cur, window)

    with pytest.raises(WatermarkMoved):
        store.call(step)
    assert store.query("SELECT count(*) FROM ticks WHERE i = 99") == [(0,)]
    assert read_watermark(store.cursor(), "t") == later.until


def test_feeds_of_one_window_move_together_or_not_at_all(store: Store) -> None:
    feeds = [Feed(store, n, max_snapshots=100) for n in ("a", "b", "c")]
    snapshots(store, 3)
    window = feeds[0].window()
    store.call(lambda cur: move_feeds(cur, feeds, window))  # from -1: the first moves
    assert [read_watermark(store.cursor(), f.name) for f in feeds] == [window.until] * 3
    snapshots(store, 2)
    nxt = Feed(store, "a", max_snapshots=100).window()
    before = current_snapshot(store)
    store.call(lambda cur: move_feeds(cur, feeds, nxt))
    assert current_snapshot(store) == before + 1
    assert [read_watermark(store.cursor(), f.name) for f in feeds] == [nxt.until] * 3

    # "b" moved by someone else: none of the three moves, the transaction rolls back.
    snapshots(store, 2)
    last = Feed(store, "a", max_snapshots=100).window()
    store.call(lambda cur: feeds[1].move(cur, last))
    with pytest.raises(WatermarkMoved, match="'b'"):
        store.call(lambda cur: move_feeds(cur, feeds, last))
    assert [read_watermark(store.cursor(), f.name) for f in feeds] == [
        nxt.until,
        last.until,
        nxt.until,
    ]


def test_quiet_windows_are_remembered_until_something_is_found(store: Store) -> None:
    feed = Feed(store, "t", max_snapshots=100)
    snapshots(store, 2)
    window = feed.window()
    assert not feed.is_quiet(window)
    feed.remember(window, quiet=True)
    assert feed.is_quiet(window)
    assert not feed.is_quiet(window.shrink(window.until - 1))
    feed.remember(window, quiet=False)
    assert not feed.is_quiet(window)


def test_start_at_sets_only_a_new_watermark(store: Store) -> None:
    feed = Feed(store, "t", max_snapshots=100)
    store.call(lambda cur: feed.start_at(cur, 7))
    store.call(lambda cur: feed.start_at(cur, 9))
    assert feed.position() == 7


def test_the_loop_steps_at_once_while_behind_then_waits() -> None:
    calls: list[str] = []
    behind = [True, True, False]

    async def main() -> None:
        stop = asyncio.Event()

        def step() -> bool:
            calls.append("step")
            if len(calls) >= 4:
                stop.set()
            return behind.pop(0) if behind else False

        async def after() -> None:
            calls.append("after")

        # A long interval: only the steps made while behind (and the first) fit in the test.
        task = asyncio.create_task(run_steps(step, stop, 60.0, "test", after=after))
        await asyncio.sleep(0.3)
        assert calls == ["step", "after"] * 3
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())


def test_a_wake_steps_at_once_but_no_sooner_than_the_gap_after_the_last_step() -> None:
    steps: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop, wake = asyncio.Event(), asyncio.Event()

        def step() -> bool:
            steps.append(loop.time())
            return False

        # Woken, no gap: a step at once (the long interval would never come).
        task = asyncio.create_task(run_steps(step, stop, 60.0, "test", wake=wake))
        await asyncio.sleep(0.1)
        wake.set()
        await asyncio.sleep(0.1)
        assert len(steps) == 2 and steps[1] - steps[0] < 0.2
        stop.set()
        await asyncio.wait_for(task, 5)

        # Woken at once after a step with a 0.5 s gap: the next step waits out the gap.
        steps.clear()
        stop.clear()
        task = asyncio.create_task(run_steps(step, stop, 60.0, "test", wake=wake, min_gap_s=0.5))
        await asyncio.sleep(0.05)
        wake.set()
        await asyncio.sleep(0.2)
        assert len(steps) == 1  # woken, still inside the gap
        await asyncio.sleep(0.5)
        # The gap runs from before the step is handed to its thread: allow that hand-over's
        # jitter in where the step itself reads the clock (without the gap it is ~0.05 s).
        assert len(steps) == 2 and steps[1] - steps[0] >= 0.45
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())


def test_a_failed_step_is_logged_and_retried_and_a_closed_store_pauses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes: list[BaseException | None] = [RuntimeError("boom"), StoreUnavailable("closed"), None]

    async def main() -> None:
        stop = asyncio.Event()

        def step() -> bool:
            outcome = outcomes.pop(0) if outcomes else None
            if not outcomes:
                stop.set()
            if outcome is not None:
                raise outcome
            return False

        await asyncio.wait_for(run_steps(step, stop, 0.01, "test work"), 5)

    with caplog.at_level(logging.WARNING, "collector.runs.feed"):
        asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert "test work step failed; retrying" in messages
    assert "test work paused: the store is unavailable" in messages
    assert outcomes == []
