"""The durable store: a DuckLake lakehouse (DuckDB catalog + Parquet files) under the data dir.

The pipeline appends `Rows` through one writer thread that group-commits; the auth and admin
modules write small records through the same thread; the read API queries through cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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

from collector.cluster import fence as fences
from collector.model import Accepted, MalformedPayload, Rows, Signal, StoreUnavailable
from collector.store import conflict
from collector.store.commits import CommitSignal
from collector.store.dedup import SpanDedup
from collector.store.lake import LAKE, StoreSettings, connect
from collector.store.readers import CursorPool, SnapshotReader
from collector.store.schema import create_table_sql, missing_columns
from collector.store.stats import StoreStats

# Opening the lake lives in collector/store/lake.py; callers may keep importing it from here.

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors of a commit that come from the rows themselves: the same rows fail again on a retry.
_DATA_ERRORS = (
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.OutOfRangeException,
    duckdb.ConstraintException,
)
# After a failed commit, files it wrote are removed at most this often (a full disk fails
# every commit, and listing the data files is not free).
_ORPHAN_SWEEP_S = 5.0
# On a shared store, a file no catalog knows is an orphan only once it is older than any
# commit of another node can take to land (its files are written before its catalog rows).
_SHARED_ORPHAN_AGE_S = 3600


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
    # The lease of the job that asked (collector/cluster/fence.py), taken from the caller's
    # context: the writer thread stamps the transaction with it.
    fence: fences.Fence | None = field(default_factory=fences.current)


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
        self.commits = CommitSignal()
        """Fired after each commit (of another node too, on a shared store)."""
        self.admit: Callable[[Rows], None] | None = None
        """Checked before every append is queued (the disk cap); raises to refuse the rows."""
        self.spans_committed: Callable[[int, int], None] | None = None
        """Told (snapshot, spans) after each commit that stored spans (the derivation lag)."""
        self.files_lock = threading.Lock()
        """Held by whoever writes data files outside a commit of the writer thread (compaction's
        merges), so removing a failed commit's files never takes one being written."""
        self._orphans_due = False
        self._last_sweep = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        con = connect(self.settings)
        ddl = [
            sql.replace("TABLE IF NOT EXISTS ", f"TABLE IF NOT EXISTS {LAKE}.")
            for sql in [create_table_sql(signal) for signal in Signal] + list(META_DDL)
        ]
        # One transaction, one snapshot. Nodes starting together create the same tables: the
        # loser of that race retries and then finds them there.
        conflict.retry(functools.partial(_in_transaction, con, ddl), "create tables")
        conflict.retry(functools.partial(_add_missing_columns, con), "add columns")
        self._con = con
        self._readers = CursorPool(con, LAKE, self.settings.query_timeout_s)
        self._dedup.load(con, f"{LAKE}.{Signal.TRACES.value}")
        if not self.settings.remote_data:
            self._new_data_files(con)  # start the fsync watermark at the files already there
        self._remove_orphans(con)  # what a crash left half written
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
        if self.settings.remote_data or self.settings.shared:
            return self.catalog_bytes()
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

    def catalog_bytes(self) -> int:
        """Bytes of the live data and delete files as the catalog records them (the measure of a
        store in object storage, where nothing can be walked cheaply)."""
        meta = f"__ducklake_metadata_{LAKE}"
        found = self.query(
            f"""SELECT (SELECT coalesce(sum(file_size_bytes), 0) FROM {meta}.ducklake_data_file
                        WHERE end_snapshot IS NULL)
                     + (SELECT coalesce(sum(file_size_bytes), 0) FROM {meta}.ducklake_delete_file
                        WHERE end_snapshot IS NULL)"""
        )
        return int(found[0][0] or 0)

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
        def once() -> Any:
            try:
                cur.execute("BEGIN")
                if call.fence is not None:
                    call.fence.apply(cur)
                result = call.fn(cur)
                cur.execute("COMMIT")
            except BaseException:
                _rollback(cur)
                raise
            return result

        try:
            result = conflict.retry(once, "write", self._count_conflict)
        except BaseException as e:
            call.future.set_exception(e)
            return
        self.commits.fire()
        call.future.set_result(result)

    def _count_conflict(self) -> None:
        self.stats.commit_conflicts += 1

    def _commit_group(self, cur: duckdb.DuckDBPyConnection, group: list[_Append]) -> None:
        started = time.perf_counter()
        try:
            results, new_hashes = self._write_retrying(cur, group)
        except Exception as e:
            _rollback(cur)
            self.stats.record_failure(
                time.monotonic(),
                f"{type(e).__name__}: {e}"[:300],
                of_store=not isinstance(e, _DATA_ERRORS),
            )
            self._orphans_due = True
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
            self._sweep_orphans(cur)
            group[0].done(_commit_error(group[0].rows, e))
            return
        self._dedup.remember(new_hashes)
        self.commits.fire()
        if self._orphans_due:
            self._sweep_orphans(cur)
        elapsed = time.perf_counter() - started
        self.stats.record_commit(elapsed, sum(r.accepted for r in results))
        for item, result in zip(group, results, strict=True):
            item.done(result)

    def _write_retrying(
        self, cur: duckdb.DuckDBPyConnection, group: list[_Append]
    ) -> tuple[list[Accepted], np.ndarray]:
        """`_write`, again after a commit conflict with another node: nothing of a conflicting
        attempt was committed, and the dedup remembers hashes only after a success."""

        def once() -> tuple[list[Accepted], np.ndarray]:
            try:
                return self._write(cur, group)
            except BaseException:
                _rollback(cur)
                raise

        return conflict.retry(once, "group commit", self._count_conflict)

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
        # Object storage acknowledges a PUT once the object is durable: nothing to sync there.
        if self.settings.fsync and not self.settings.remote_data:
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
                    Accepted(
                        keep_per_item[span_i],
                        dup_per_item[span_i],
                        g.rows.rejected,
                        g.rows.rejection_message,
                    )
                )
                span_i += 1
            else:
                results.append(Accepted(g.rows.count, 0, g.rows.rejected, g.rows.rejection_message))
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

    def _sweep_orphans(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Remove the files a failed commit left (on a full disk, one empty Parquet file per
        table it wrote), at most every few seconds while commits keep failing."""
        now = time.monotonic()
        if not self._orphans_due or now - self._last_sweep < _ORPHAN_SWEEP_S:
            return
        self._last_sweep = now
        self._orphans_due = False
        self._remove_orphans(cur)

    def _remove_orphans(self, cur: duckdb.DuckDBPyConnection) -> None:
        # On the writer thread no commit of this node is under way, and with the lock no merge:
        # every data file the catalog does not know is left over (DuckLake lists and removes
        # them). On a shared store another node may be writing files it has not committed yet,
        # so only files older than any commit can take are removed there.
        age = (
            f"older_than => now() - INTERVAL {_SHARED_ORPHAN_AGE_S} SECOND"
            if self.settings.shared
            else "cleanup_all => true"
        )
        with self.files_lock:
            try:
                removed = cur.execute(
                    f"CALL ducklake_delete_orphaned_files('{LAKE}', {age})"
                ).fetchall()
            except duckdb.Error as e:
                log.warning("could not remove the files of failed commits: %s", e)
                self._orphans_due = True
                return
        if removed:
            self.stats.orphans_removed += len(removed)
            log.warning("removed %d data file(s) that failed commits left behind", len(removed))


def _commit_error(rows: Rows, e: Exception) -> Exception:
    """What the sender of rows whose commit failed is told: OTLP rows the store refuses as
    data are a permanent error (retrying sends the same values); anything else is retryable."""
    if rows.signal is not None and isinstance(e, _DATA_ERRORS):
        return MalformedPayload(f"the store refused the values of this request: {e}")
    return StoreUnavailable(f"commit failed: {e}")


def _resolve(fut: asyncio.Future[Accepted], result: Accepted | BaseException) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


def _add_missing_columns(cur: duckdb.DuckDBPyConnection) -> None:
    """A store created before a column was added gains it (appended, as in the schema); looked
    up again on each try, as another node may have just added it."""
    alters = []
    for signal in Signal:
        have = {r[0] for r in cur.execute(f"DESCRIBE {LAKE}.{signal.value}").fetchall()}
        alters += [
            f"ALTER TABLE {LAKE}.{signal.value} ADD COLUMN {column.name} {column.sql}"
            for column in missing_columns(signal, have)
        ]
    if alters:
        _in_transaction(cur, alters)


def _in_transaction(cur: duckdb.DuckDBPyConnection, statements: list[str]) -> None:
    cur.execute("BEGIN")
    try:
        for sql in statements:
            cur.execute(sql)
        cur.execute("COMMIT")
    except BaseException:
        _rollback(cur)
        raise


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        cur.execute("ROLLBACK")
