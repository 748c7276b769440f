"""The durable store: a DuckLake lakehouse (DuckDB catalog + Parquet files) under the data dir.

The pipeline appends `Rows` through one writer thread that group-commits; the auth and admin
modules write small records through the same thread; the read API queries through cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa

from collector.model import Accepted, Rows, Signal, StoreUnavailable
from collector.store.dedup import SpanDedup
from collector.store.lake import LAKE, StoreSettings, connect
from collector.store.readers import CursorPool, SnapshotReader
from collector.store.schema import create_table_sql
from collector.store.stats import StoreStats

# Opening the lake lives in collector/store/lake.py; callers may keep importing it from here.

log = logging.getLogger(__name__)
T = TypeVar("T")


# Tables of our own records (orgs, keys, derived-processing watermarks); small and updated.
META_DDL = (
    """CREATE TABLE IF NOT EXISTS orgs (
  name VARCHAR, created_at TIMESTAMPTZ, settings JSON)""",
    """CREATE TABLE IF NOT EXISTS api_keys (
  key_id VARCHAR, org VARCHAR, scope VARCHAR, name VARCHAR, prefix VARCHAR,
  secret_hash VARCHAR, created_at TIMESTAMPTZ, last_used_at TIMESTAMPTZ,
  revoked_at TIMESTAMPTZ, source VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS watermarks (
  name VARCHAR, snapshot_id BIGINT, updated_at TIMESTAMPTZ)""",
)


@dataclass
class _Append:
    rows: Rows
    done: Callable[[Accepted | BaseException], None]
    queued_at: float = field(default_factory=time.monotonic)


@dataclass
class _Call:
    fn: Callable[[duckdb.DuckDBPyConnection], Any]
    future: Future[Any] = field(default_factory=Future)


class Store:
    """Owns the DuckDB instance; one writer thread, any number of reader cursors."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self._con: duckdb.DuckDBPyConnection | None = None
        self._readers: CursorPool | None = None
        self._queue: queue.Queue[_Append | _Call | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._dedup = SpanDedup(settings.dedup_window_s)
        self._last_file_id = -1
        self.stats = StoreStats()
        self.admit: Callable[[Rows], None] | None = None
        """Checked before every append is queued (the disk cap); raises to refuse the rows."""
        self.spans_committed: Callable[[int, int], None] | None = None
        """Told (snapshot, spans) after each commit that stored spans (the derivation lag)."""

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        con = connect(self.settings)
        for signal in Signal:
            con.execute(
                create_table_sql(signal).replace(
                    "TABLE IF NOT EXISTS ", f"TABLE IF NOT EXISTS {LAKE}."
                )
            )
        for ddl in META_DDL:
            con.execute(ddl.replace("TABLE IF NOT EXISTS ", f"TABLE IF NOT EXISTS {LAKE}."))
        self._con = con
        self._readers = CursorPool(con, LAKE, self.settings.query_timeout_s)
        self._dedup.load(con, f"{LAKE}.{Signal.TRACES.value}")
        self._new_data_files(con)  # start the fsync watermark at the files already there
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the database. Safe twice."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._readers is not None:
            self._readers.close()
            self._readers = None
        if self._con is not None:
            self._con.close()
            self._con = None

    # -- writing ---------------------------------------------------------------------------

    async def append(self, rows: Rows) -> Accepted:
        """Queue rows for the next group commit; returns once they are durable."""
        if self.admit is not None:
            self.admit(rows)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Accepted] = loop.create_future()

        def done(result: Accepted | BaseException) -> None:
            loop.call_soon_threadsafe(_resolve, fut, result)

        self._put(_Append(rows, done))
        return await fut

    def call(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `fn(writer_cursor)` in its own transaction on the writer thread (blocking)."""
        item = _Call(fn)
        self._put(item)
        result: T = item.future.result()
        return result

    async def acall(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        item = _Call(fn)
        self._put(item)
        result: T = await asyncio.wrap_future(item.future)
        return result

    def _put(self, item: _Append | _Call) -> None:
        if self._thread is None:
            raise StoreUnavailable("the store is closed")
        self._queue.put(item)

    # -- reading ---------------------------------------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StoreUnavailable("the store is closed")
        cur = self._con.cursor()
        cur.execute(f"USE {LAKE}")
        return cur

    def query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run a parametrised read, interrupted after the query timeout."""
        return self._pool().query(sql, params)

    def reader(self) -> AbstractContextManager[SnapshotReader]:
        """Reads that share one transaction (one snapshot), each interrupted after the query
        timeout: for requests that make several queries."""
        return self._pool().reader()

    def _pool(self) -> CursorPool:
        if self._readers is None:
            raise StoreUnavailable("the store is closed")
        return self._readers

    def size_bytes(self) -> int:
        total = 0
        data = Path(self.settings.data_path).resolve()
        catalog_dir = Path(self.settings.catalog).resolve().parent
        # The data folder usually lies inside the catalog's: walk each file once.
        roots = {catalog_dir} if data.is_relative_to(catalog_dir) else {data, catalog_dir}
        for root in roots:
            for dirpath, _, files in os.walk(root):
                for f in files:
                    with contextlib.suppress(OSError):  # compacted away meanwhile
                        total += os.stat(os.path.join(dirpath, f)).st_size
        return total

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        assert self._con is not None
        cur = self._con.cursor()
        cur.execute(f"USE {LAKE}")
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            group: list[_Append] = []
            calls: list[_Call] = []
            (group if isinstance(item, _Append) else calls).append(item)  # type: ignore[arg-type]
            # The interval runs from when the oldest request arrived: requests that queued up
            # during the previous commit are already late and go into this one at once.
            first_queued = item.queued_at if isinstance(item, _Append) else time.monotonic()
            deadline = first_queued + self.settings.commit_interval_s
            n = item.rows.count if isinstance(item, _Append) else 0
            # Group commit: gather what arrives within the interval (or up to the row cap).
            while group and n < self.settings.commit_max_rows:
                timeout = deadline - time.monotonic()
                try:
                    nxt = (
                        self._queue.get(timeout=timeout)
                        if timeout > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                if isinstance(nxt, _Append):
                    group.append(nxt)
                    n += nxt.rows.count
                else:
                    calls.append(nxt)
            if group:
                self._commit_group(cur, group)
            for call in calls:
                self._run_call(cur, call)
        # Drain: whatever was queued before close() still gets committed.
        rest: list[_Append] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Append):
                rest.append(item)
            elif isinstance(item, _Call):
                self._run_call(cur, item)
        if rest:
            self._commit_group(cur, rest)
        cur.close()

    def _run_call(self, cur: duckdb.DuckDBPyConnection, call: _Call) -> None:
        try:
            cur.execute("BEGIN")
            result = call.fn(cur)
            cur.execute("COMMIT")
            call.future.set_result(result)
        except BaseException as e:
            _rollback(cur)
            call.future.set_exception(e)

    def _commit_group(self, cur: duckdb.DuckDBPyConnection, group: list[_Append]) -> None:
        started = time.perf_counter()
        try:
            results, new_hashes = self._write(cur, group)
        except Exception as e:
            _rollback(cur)
            self.stats.commit_failures += 1
            if len(group) > 1:
                # One bad request must not fail everyone it shared a commit with: commit each
                # alone, so only the one that really fails is refused (and retried by its client).
                log.warning(
                    "commit of %d requests failed (%s); committing each alone", len(group), e
                )
                for item in group:
                    self._commit_group(cur, [item])
                return
            log.exception("commit failed")
            group[0].done(StoreUnavailable(f"commit failed: {e}"))
            return
        self._dedup.remember(new_hashes)
        elapsed = time.perf_counter() - started
        self.stats.record_commit(elapsed, sum(r.accepted for r in results))
        for item, result in zip(group, results, strict=True):
            item.done(result)

    def _write(
        self, cur: duckdb.DuckDBPyConnection, group: list[_Append]
    ) -> tuple[list[Accepted], np.ndarray]:
        span_tables = [g.rows.table for g in group if g.rows.signal is Signal.TRACES]
        keep_per_item: list[int] = []
        dup_per_item: list[int] = []
        new_hashes = np.empty(0, dtype=np.uint64)
        stored_spans = 0
        cur.execute("BEGIN")
        if span_tables:
            spans = pa.concat_tables(span_tables)
            keep, new_hashes = self._dedup.new_spans(cur, spans, Signal.TRACES.value)
            self.stats.deduplicated += self._dedup.last_dropped
            spans = self._dedup.keyed if self._dedup.keyed is not None else spans
            kept = (
                spans.take(pa.array(keep, type=pa.int64())) if len(keep) < spans.num_rows else spans
            )
            stored_spans = kept.num_rows
            if kept.num_rows:
                cur.register("_spans_in", kept)
                cur.execute(f"INSERT INTO {Signal.TRACES.value} SELECT * FROM _spans_in")
                cur.unregister("_spans_in")
            # Attribute kept rows back to the request they came from.
            keep_set = np.zeros(spans.num_rows, dtype=np.bool_)
            keep_set[keep] = True
            offset = 0
            for t in span_tables:
                k = int(keep_set[offset : offset + t.num_rows].sum())
                keep_per_item.append(k)
                dup_per_item.append(t.num_rows - k)
                offset += t.num_rows
        others: dict[str, list[pa.Table]] = {}
        for g in group:
            if g.rows.signal is not Signal.TRACES:
                others.setdefault(g.rows.table_name, []).append(g.rows.table)
        for name, tables in others.items():
            # `name` is a table of ours (a Signal or a native API's target), never user input.
            cur.register("_rows_in", pa.concat_tables(tables))
            cur.execute(f"INSERT INTO {name} SELECT * FROM _rows_in")
            cur.unregister("_rows_in")
        cur.execute("COMMIT")
        if self.settings.fsync:
            self._fsync_new_files(cur)
        if stored_spans and self.spans_committed is not None:
            # The snapshot just made, or a later one if another cursor committed meanwhile.
            found = cur.execute(f"SELECT id FROM {LAKE}.current_snapshot()").fetchone()
            if found is not None:
                self.spans_committed(int(found[0]), stored_spans)
        results: list[Accepted] = []
        span_i = 0
        for g in group:
            if g.rows.signal is Signal.TRACES:
                results.append(
                    Accepted(keep_per_item[span_i], dup_per_item[span_i], g.rows.rejected)
                )
                span_i += 1
            else:
                results.append(Accepted(g.rows.count, 0, g.rows.rejected))
        return results, new_hashes

    def _new_data_files(self, cur: duckdb.DuckDBPyConnection) -> list[str]:
        """Parquet files the catalog gained since the last call (read from DuckLake's metadata)."""
        meta = f"__ducklake_metadata_{LAKE}"
        rows = cur.execute(
            f"""SELECT f.data_file_id, s.path, s.path_is_relative, t.path, t.path_is_relative,
                       f.path, f.path_is_relative
                FROM {meta}.ducklake_data_file f
                JOIN {meta}.ducklake_table t ON f.table_id = t.table_id AND t.end_snapshot IS NULL
                JOIN {meta}.ducklake_schema s ON t.schema_id = s.schema_id
                     AND s.end_snapshot IS NULL
                WHERE f.data_file_id > ?""",
            [self._last_file_id],
        ).fetchall()
        paths = []
        for file_id, s_path, s_rel, t_path, t_rel, f_path, f_rel in rows:
            self._last_file_id = max(self._last_file_id, file_id)
            path = f_path
            if f_rel:
                path = os.path.join(t_path, path)
                if t_rel:
                    path = os.path.join(s_path, path)
                    if s_rel:
                        path = os.path.join(self.settings.data_path, path)
            paths.append(path)
        return paths

    def _fsync_new_files(self, cur: duckdb.DuckDBPyConnection) -> None:
        # DuckDB syncs its catalog WAL on commit; make the new Parquet files as durable.
        for path in self._new_data_files(cur):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # compacted away already
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _resolve(fut: asyncio.Future[Accepted], result: Accepted | BaseException) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        cur.execute("ROLLBACK")
