"""Reader cursors of the store: a pool of cursors already switched to the lake, and readers that
keep one transaction (one snapshot) over several queries. `collector/store/writer.py` owns the pool;
the read APIs query through `Store.query` and `Store.reader()`.

Why a pool: `USE lake` on a new cursor is a DuckLake transaction of its own (a snapshot lookup in
the catalog), so a fresh cursor per query paid for two. Why readers: every DuckLake transaction
looks the snapshot up again; a request that makes five queries pays for it once, and its
answers all come from the same snapshot.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import duckdb

Params = Sequence[Any] | dict[str, Any] | None


class Reads(Protocol):
    """What the named queries need of the store: parametrised reads."""

    def query(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]: ...


def _timed(
    cur: duckdb.DuckDBPyConnection, timeout_s: float, sql: str, params: Params
) -> tuple[list[tuple[Any, ...]], bool]:
    """`cur.execute(sql).fetchall()`, interrupted after `timeout_s`, and whether the interrupt
    fired: a late one could land on the cursor's next query, so such a cursor is not reused."""
    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        cur.interrupt()

    timer = threading.Timer(timeout_s, interrupt)
    timer.start()
    try:
        rows = cur.execute(sql, params or []).fetchall()
    except duckdb.Error:
        timer.cancel()
        if fired.is_set():
            raise _Tainted from None
        raise
    timer.cancel()
    return rows, fired.is_set()


class _Tainted(Exception):
    """The query timed out; its cursor must be closed."""


_TIMED_OUT = "INTERRUPT Error: the query ran past the query timeout"


class CursorPool:
    """Idle reader cursors of one DuckDB connection, each already on `lake`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, lake: str, timeout_s: float) -> None:
        self._con: duckdb.DuckDBPyConnection | None = con
        self._lake = lake
        self.timeout_s = timeout_s
        self._idle: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()
        self.keep = 16  # idle cursors kept; more are closed when given back

    def take(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._con is None:
                raise RuntimeError("the store is closed")
            cur = self._con.cursor()
        cur.execute(f"USE {self._lake}")
        return cur

    def give(self, cur: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            if self._con is not None and len(self._idle) < self.keep:
                self._idle.append(cur)
                return
        cur.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._con = self._idle, [], None
        for cur in idle:
            cur.close()

    def query(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        """One read in a transaction of its own, interrupted after the query timeout."""
        cur = self.take()
        try:
            rows, tainted = _timed(cur, self.timeout_s, sql, params)
        except _Tainted:
            cur.close()
            raise duckdb.InterruptException(_TIMED_OUT) from None
        except BaseException:
            self.give(cur)  # the failed statement's transaction is over: the cursor is clean
            raise
        if tainted:
            cur.close()
        else:
            self.give(cur)
        return rows

    @contextmanager
    def reader(self) -> Iterator[SnapshotReader]:
        """A reader whose queries share one transaction, hence one snapshot of the lake."""
        cur = self.take()
        reader = SnapshotReader(cur, self.timeout_s)
        clean = False
        try:
            yield reader
            clean = reader.end()
        finally:
            if clean:
                self.give(cur)
            else:
                cur.close()


class SnapshotReader:
    """Reads in one read-only transaction; a failed query ends it and the next one starts a new
    transaction (DuckDB aborts a transaction on any error)."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, timeout_s: float) -> None:
        self._cur = cur
        self._timeout_s = timeout_s
        self._open = False
        self._tainted = False

    def query(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        if self._tainted:
            raise duckdb.InterruptException(_TIMED_OUT)
        if not self._open:
            self._cur.execute("BEGIN TRANSACTION")
            self._open = True
        try:
            rows, tainted = _timed(self._cur, self._timeout_s, sql, params)
        except _Tainted:
            self._tainted = True
            raise duckdb.InterruptException(_TIMED_OUT) from None
        except duckdb.Error:
            self._cur.execute("ROLLBACK")
            self._open = False
            raise
        self._tainted = tainted
        return rows

    def end(self) -> bool:
        """Ends the transaction (nothing was written: a rollback); False if the cursor must not
        be used again."""
        if self._tainted:
            return False
        if self._open:
            self._cur.execute("ROLLBACK")
            self._open = False
        return True
