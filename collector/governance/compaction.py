"""Store maintenance: merge the small Parquet files of frequent commits, flush inlined rows, and
reclaim the disk of expired snapshots without ever expiring one a change-feed consumer still needs.

Runs from `collector/governance/maintenance.py` on a schedule, and as soon as the small files pass
a bound, against the service's store: merges on a cursor of its own (commits go on meanwhile),
falling back to the writer thread when deletes conflict.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from collector.configparse import bounds
from collector.store.lake import LAKE
from collector.store.writer import Store

log = logging.getLogger(__name__)
_META = f"__ducklake_metadata_{LAKE}"
MIB = 1024 * 1024
_NO_CONSUMER = 1 << 62  # no consumer at all: every snapshot but the current may go


@dataclass(frozen=True, kw_only=True)
class CompactionConfig:
    """`compaction:` — how often and how long small files are merged, and their layout."""

    enabled: bool = True
    interval_s: int = field(default=300, metadata=bounds(ge=1))
    max_small_files: int = field(default=64, metadata=bounds(ge=2))
    """A run starts as soon as this many small files (below a quarter of their table's target)
    are live, so that each merge is small and the file count stays bounded under load."""
    check_interval_s: float = field(default=5.0, metadata=bounds(ge=0.1))
    """How often the small files are counted against `max_small_files` (one catalog query)."""
    max_seconds: float = field(default=60.0, metadata=bounds(ge=0.1))
    """Time budget of one run; a backlog is worked off over several runs."""
    target_file_mib: int = field(default=64, metadata=bounds(ge=1, le=4096))
    """Merged files grow to about this size: one merge reads at most about this much."""
    spans_target_file_mib: int = field(default=16, metadata=bounds(ge=1, le=4096))
    """The same for `spans`, kept in time order: smaller files let a trace lookup's time window
    skip more of them (`docs/benchmarks.md`, sustained load)."""
    spans_row_group_rows: int = field(default=32_768, metadata=bounds(ge=2048))
    """Row groups of `spans` (in time order). A merge buffers one whole in memory before writing
    it: ~400 MiB of wide rows at DuckDB's default of 122,880. Smaller ones made the trace
    lookups no faster and the aggregations over all spans slower (`docs/benchmarks.md`)."""
    runs_row_group_rows: int = field(default=16_384, metadata=bounds(ge=2048))
    """Row groups of `runs` (sorted by run key) and `span_runs` (by trace): a run lookup by id
    decodes one row group a file, and their wide id columns cost per row decoded."""
    flush_inlined_rows: int = field(default=1, metadata=bounds(ge=1))
    """Rows kept inline in the catalog (small commits) are written out from this many."""


@dataclass
class CompactionResult:
    merged: dict[str, int] = field(default_factory=dict)  # table → merge operations
    inputs: list[tuple[str, int]] = field(default_factory=list)  # (table, files) a merge
    flushed: int = 0
    conflicts: int = 0
    on_writer: int = 0
    seconds: float = 0.0
    longest_writer_slice_s: float = 0.0


# Lookups by a random id (a trace's span-to-run rows, a run by its key) prune with Parquet
# min/max only in files sorted by that id; small row groups make one pruned row group cheap to
# read.
SORT_KEYS = {
    "span_runs": "org, trace_id",
    "runs": "run_key",
    # A workflow's tool breakdown reads one workflow's rows in a time window.
    "run_tools": "org, workflow_name, started_at",
}
# `spans` stays in commit order, that is by time. Every lookup of a trace's spans is within a time
# window: file and row-group min/max of the start time find the files, and the Parquet bloom
# filter DuckDB writes for `trace_id` (when it dictionary-encodes it: traces of about eight spans
# or more) skips the other row groups. Sorting wide span rows by trace
# held ~30 times a merge's input in memory and took a core from ingest for as long as it ran, all
# through a sustained load (`docs/benchmarks.md`, sustained load): merges now stream.
UNSORTED = ("spans",)


def target_bytes(config: CompactionConfig, table: str) -> int:
    """The size merged files of `table` grow to, and so the most one merge of it reads."""
    return (config.spans_target_file_mib if table == "spans" else config.target_file_mib) * MIB


def tier_bytes(config: CompactionConfig, table: str) -> int:
    """Files below this are the small ones (mostly one commit each): they are merged among
    themselves first, so a merged file is not rewritten with every few new commits."""
    return target_bytes(config, table) // 4


def layout(config: CompactionConfig) -> dict[tuple[str, str], str]:
    """The lake options of the table layout, keyed by (option, scope) as `options()` lists them."""
    return {
        ("target_file_size", "None"): f"{config.target_file_mib}MB",
        ("target_file_size", "main.spans"): f"{config.spans_target_file_mib}MB",
        # Spans have no sort order (`UNSORTED`); were one set by hand, ingest commits would
        # still not pay for it. The deriver's commits are small, so `runs` and `span_runs` are
        # sorted on insert too.
        ("sort_on_insert", "main.spans"): "false",
        ("parquet_row_group_size", "main.spans"): str(config.spans_row_group_rows),
        ("parquet_row_group_size", "main.span_runs"): str(config.runs_row_group_rows),
        ("parquet_row_group_size", "main.runs"): str(config.runs_row_group_rows),
    }


def apply_layout(cur: duckdb.DuckDBPyConnection, config: CompactionConfig) -> None:
    """Sets the options of `layout` and the sort orders of `SORT_KEYS` that differ from the
    lake's, and removes the sort order of an `UNSORTED` table (each is a catalog write), for the
    tables that exist."""
    tables = {
        str(r[0])
        for r in cur.execute(
            "SELECT table_name FROM duckdb_tables() "
            "WHERE database_name = ? AND schema_name = 'main'",
            [LAKE],
        ).fetchall()
    }
    opts = {
        (str(r[0]), str(r[2])): str(r[1])
        for r in cur.execute(
            f"SELECT option_name, value, scope_entry FROM {LAKE}.options()"
        ).fetchall()
    }
    for (name, scope), value in layout(config).items():
        if opts.get((name, scope)) == value:
            continue
        if scope == "None":
            cur.execute(f"CALL {LAKE}.set_option(?, ?)", [name, value])
        elif (table := scope.split(".", 1)[1]) in tables:
            cur.execute(f"CALL {LAKE}.set_option(?, ?, table_name => ?)", [name, value, table])
    sorted_already = {
        str(r[0])
        for r in cur.execute(
            f"""SELECT t.table_name FROM {_META}.ducklake_sort_info i
                JOIN {_META}.ducklake_table t USING (table_id)
                WHERE t.end_snapshot IS NULL AND i.end_snapshot IS NULL"""
        ).fetchall()
    }
    for table, keys in SORT_KEYS.items():
        if table in tables and table not in sorted_already:
            cur.execute(f"ALTER TABLE {LAKE}.{table} SET SORTED BY ({keys})")
    for table in UNSORTED:
        if table in tables and table in sorted_already:  # a store from before: merges stream
            cur.execute(f"ALTER TABLE {LAKE}.{table} RESET SORTED BY")


def prepare(store: Store, config: CompactionConfig) -> None:
    """Sets the table layout once the deriver has created its tables (see `apply_layout`)."""
    store.call(lambda cur: apply_layout(cur, config))


@dataclass(frozen=True)
class Tier:
    """The live files of one table that one merge may take: sizes in [low, high) bytes."""

    table: str
    low: int
    high: int


def _live_file_sizes(store: Store, config: CompactionConfig) -> list[tuple[str, int, int]]:
    """(table, small files, files between the small bound and the target), per table."""
    spans_tier, tier = tier_bytes(config, "spans"), tier_bytes(config, "")
    spans_target, target = target_bytes(config, "spans"), target_bytes(config, "")
    rows = store.query(
        f"""SELECT t.table_name,
                   count(*) FILTER (f.file_size_bytes < CASE t.table_name WHEN 'spans'
                                    THEN ? ELSE ? END),
                   count(*) FILTER (f.file_size_bytes < CASE t.table_name WHEN 'spans'
                                    THEN ? ELSE ? END)
            FROM {_META}.ducklake_data_file f
            JOIN {_META}.ducklake_table t ON f.table_id = t.table_id AND t.end_snapshot IS NULL
            WHERE f.end_snapshot IS NULL GROUP BY ALL""",
        [spans_tier, tier, spans_target, target],
    )
    return [(str(r[0]), int(r[1]), int(r[2]) - int(r[1])) for r in rows]


def small_files(store: Store, config: CompactionConfig) -> int:
    """The live files below their table's small bound: what `max_small_files` is held to."""
    return sum(small for _, small, _ in _live_file_sizes(store, config))


def merge_tiers(store: Store, config: CompactionConfig) -> list[Tier]:
    """What to merge, in order: each table's small files (most first), then its files between
    the small bound and the target. A merge takes adjacent files of one tier until their sizes
    add up to about the target, so no merge reads much more than the target."""
    found = _live_file_sizes(store, config)
    small = [(n, t) for t, n, _ in found if n > 1]
    middle = [(n, t) for t, _, n in found if n > 1]
    return [
        *(Tier(t, 0, tier_bytes(config, t)) for _, t in sorted(small, reverse=True)),
        *(
            Tier(t, tier_bytes(config, t), target_bytes(config, t))
            for _, t in sorted(middle, reverse=True)
        ),
    ]


def _inlined_tables(store: Store, at_least: int) -> list[str]:
    tables = []
    for table_name, inlined in store.query(
        f"""SELECT t.table_name, i.table_name FROM {_META}.ducklake_inlined_data_tables i
            JOIN {_META}.ducklake_table t ON i.table_id = t.table_id AND t.end_snapshot IS NULL"""
    ):
        rows = store.query(f'SELECT count(*) FROM {_META}."{inlined}" WHERE end_snapshot IS NULL')
        if rows and int(rows[0][0]) >= at_least:
            tables.append(str(table_name))
    return sorted(set(tables))


def _run_sql(
    sql: str, params: list[object]
) -> Callable[[duckdb.DuckDBPyConnection], list[tuple[object, ...]]]:
    def run(cur: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
        return cur.execute(sql, params).fetchall()

    return run


def _is_conflict(e: duckdb.Error) -> bool:
    return "conflict" in str(e).lower()


def compact(
    store: Store, config: CompactionConfig, stop: Callable[[], bool] = lambda: False
) -> CompactionResult:
    """Flush inlined rows, then merge files tier by tier (`merge_tiers`) one output file at a
    time until nothing is left to merge or the time budget is spent. Merges run on a cursor of
    their own; a table whose merge keeps losing to concurrent deletes gets one slice on the
    writer thread."""
    started = time.perf_counter()
    deadline = started + config.max_seconds
    result = CompactionResult()
    flush = f"CALL ducklake_flush_inlined_data('{LAKE}', table_name => ?)"
    for table in _inlined_tables(store, config.flush_inlined_rows):
        store.call(_run_sql(flush, [table]))
        result.flushed += 1
    sql = f"""CALL ducklake_merge_adjacent_files('{LAKE}', ?, max_compacted_files => 1,
                                                 min_file_size => ?, max_file_size => ?)"""
    for tier in merge_tiers(store, config):
        table, params = tier.table, [tier.table, tier.low, tier.high]
        conflicts = 0
        while time.perf_counter() < deadline and not stop():
            cur = store.cursor()
            try:
                with store.files_lock:  # a merge writes files before it commits them
                    done = cur.execute(sql, params).fetchall()
            except duckdb.Error as e:
                if not _is_conflict(e):
                    raise
                result.conflicts += 1
                conflicts += 1
                if conflicts < 3:
                    continue
                slice_started = time.perf_counter()
                done = store.call(_run_sql(sql, params))
                took = time.perf_counter() - slice_started
                result.on_writer += 1
                result.longest_writer_slice_s = max(result.longest_writer_slice_s, took)
                conflicts = 0
            finally:
                cur.close()
            if not done:
                break
            result.merged[table] = result.merged.get(table, 0) + len(done)
            result.inputs += [(table, int(r[2])) for r in done]
    result.seconds = time.perf_counter() - started
    if result.merged or result.flushed:
        log.info(
            "compaction: %s merge(s), %d inlined table(s) flushed in %.2fs (%d conflicts)",
            dict(result.merged),
            result.flushed,
            result.seconds,
            result.conflicts,
        )
    return result


@dataclass
class ReclaimResult:
    expired: int = 0
    removed_files: int = 0
    safe_snapshot: int = -1


def safe_snapshot(store: Store, required: Sequence[str]) -> int:
    """The newest snapshot that may be expired: every change-feed consumer reads from its
    watermark + 1, so snapshots up to the smallest watermark are no longer needed. A required
    consumer with no watermark yet reads from the start: nothing may go."""
    marks = {
        str(name): int(mark)
        for name, mark in store.query("SELECT name, max(snapshot_id) FROM watermarks GROUP BY name")
    }
    if any(name not in marks for name in required):
        return -1
    return min(marks.values()) if marks else _NO_CONSUMER


def reclaim(
    store: Store, required: Sequence[str], grace_s: float, now: datetime | None = None
) -> ReclaimResult:
    """Expire snapshots no consumer needs, then delete the files only they referenced (those
    scheduled more than `grace_s` ago, so a query that planned on them still finds them)."""
    result = ReclaimResult(safe_snapshot=safe_snapshot(store, required))
    current = int(store.query(f"SELECT id FROM {LAKE}.current_snapshot()")[0][0])
    bound = min(result.safe_snapshot + 1, current)
    found = store.query(
        f"SELECT min(snapshot_time) FROM {LAKE}.snapshots() WHERE snapshot_id >= ?", [bound]
    )
    if bound > 0 and found and found[0][0] is not None:
        # Every snapshot older than `bound`'s, i.e. with an id up to the safe one, goes.
        expired = store.call(
            lambda cur: cur.execute(
                f"CALL ducklake_expire_snapshots('{LAKE}', older_than => ?)", [found[0][0]]
            ).fetchall()
        )
        result.expired = len(expired)
    if grace_s <= 0:
        sql, params = f"CALL ducklake_cleanup_old_files('{LAKE}', cleanup_all => true)", []
    else:
        sql = f"CALL ducklake_cleanup_old_files('{LAKE}', older_than => now() - to_seconds(?))"
        params = [float(grace_s)]
    removed = store.call(lambda cur: cur.execute(sql, params).fetchall())
    result.removed_files = len(removed)
    # Files no snapshot knows (a write that failed before its commit): only old ones, since a
    # commit in progress has written its files and not yet recorded them.
    orphaned = store.call(
        lambda cur: cur.execute(
            f"CALL ducklake_delete_orphaned_files('{LAKE}', older_than => now() - INTERVAL 1 HOUR)"
        ).fetchall()
    )
    result.removed_files += len(orphaned)
    return result
