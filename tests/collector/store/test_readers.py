"""Tests for `collector/store/readers.py` through a real store: pooled reader cursors and readers
that keep one snapshot over several queries (timeouts, failed queries, commits in between).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from collector.store.lake import StoreSettings
from collector.store.writer import Store

_SLOW = "SELECT sum(hash(i)) FROM range(1000000000000) t(i)"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(
        StoreSettings(
            catalog=str(tmp_path / "cat.ducklake"),
            data_path=str(tmp_path / "d") + "/",
            query_timeout_s=0.3,
        )
    )
    s.open()
    s.call(lambda cur: cur.execute("CREATE TABLE notes (n INTEGER)"))
    try:
        yield s
    finally:
        s.close()


def _add(store: Store, n: int) -> None:
    store.call(lambda cur: cur.execute("INSERT INTO notes VALUES (?)", [n]))


def _connection_ids(store: Store, times: int) -> set[int]:
    return {int(store.query("SELECT current_connection_id()")[0][0]) for _ in range(times)}


def test_queries_reuse_idle_cursors_already_on_the_lake(store: Store) -> None:
    # Unqualified table names resolve in the lake, and one thread's queries reuse one cursor.
    _add(store, 1)
    assert store.query("SELECT n FROM notes") == [(1,)]
    assert len(_connection_ids(store, 5)) == 1


def test_a_timed_out_query_closes_its_cursor_and_the_next_one_runs(store: Store) -> None:
    before = _connection_ids(store, 1)
    with pytest.raises(duckdb.InterruptException):
        store.query(_SLOW)
    assert store.query("SELECT count(*) FROM notes") == [(0,)]
    assert _connection_ids(store, 1).isdisjoint(before)  # a new cursor, not the interrupted one


def test_a_failed_query_leaves_its_cursor_usable(store: Store) -> None:
    with pytest.raises(duckdb.CatalogException):
        store.query("SELECT * FROM no_such_table")
    assert store.query("SELECT count(*) FROM notes") == [(0,)]


def test_a_reader_sees_one_snapshot_while_commits_go_on(store: Store) -> None:
    _add(store, 1)
    with store.reader() as r:
        assert r.query("SELECT count(*) FROM notes") == [(1,)]
        _add(store, 2)  # committed by the writer thread meanwhile
        assert r.query("SELECT count(*) FROM notes") == [(1,)]
        assert r.query("SELECT max(n) FROM notes") == [(1,)]
    assert store.query("SELECT count(*) FROM notes") == [(2,)]  # a new query sees the commit


def test_a_reader_goes_on_after_a_failed_query(store: Store) -> None:
    _add(store, 1)
    with store.reader() as r:
        with pytest.raises(duckdb.CatalogException):
            r.query("SELECT * FROM no_such_table")
        assert r.query("SELECT count(*) FROM notes") == [(1,)]  # a new transaction


def test_a_reader_times_out_and_its_cursor_is_not_reused(store: Store) -> None:
    with store.reader() as r:
        reader_id = r.query("SELECT current_connection_id()")[0][0]
        with pytest.raises(duckdb.InterruptException):
            r.query(_SLOW)
        with pytest.raises(duckdb.InterruptException):
            r.query("SELECT 1")  # the reader is done
    assert reader_id not in _connection_ids(store, 3)


def test_readers_on_threads_use_cursors_of_their_own(store: Store) -> None:
    _add(store, 7)
    seen: list[object] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            with store.reader() as r:
                for _ in range(20):
                    seen.append(r.query("SELECT sum(n) FROM notes")[0][0])
        except BaseException as e:  # reported below, on the test thread
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert seen == [7] * 80


def test_a_closed_store_refuses_readers(store: Store) -> None:
    store.close()
    with pytest.raises(Exception, match="closed"):
        store.query("SELECT 1")
    with pytest.raises(Exception, match="closed"):
        store.reader()
