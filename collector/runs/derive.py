"""Derived processing: keeps the `runs`, `span_runs` and `run_tools` tables in step with
committed spans.

Reads DuckLake's change feed of `spans` from the `runs` watermark and re-assembles every touched
trace whole with the run assembler (`processors/runs/assemble.py`), in a worker process. Its
spans are read back from the store within the start times they lie in: for a trace seen for the
first time, those the feed showed; for one with stored spans, the extent `known.py` keeps. The
rows and the new watermark commit in one transaction: a crash anywhere redoes that step, exactly
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from collector.model import Signal
from collector.runs.assembly import TraceKey, assemble_ipc, from_ipc, to_ipc
from collector.runs.feed import Feed, Window, run_steps
from collector.runs.known import KnownTraces
from collector.runs.lag import DerivationLag
from collector.runs.overdue import OverdueRuns
from collector.runs.upkeep import add_missing_columns, add_run_keys, fill_run_tools
from collector.store.lake import ARROW_BATCH_ROWS, LAKE
from collector.store.schema import DERIVED_TABLES, create_derived_sql
from collector.store.writer import Store
from processors.runs.assemble import RunsProcessor

log = logging.getLogger(__name__)

WATERMARK = "runs"
IDLE_TICK_S = 5.0  # steps are woken by commits; this tick only finds runs overdue for a root
# A step's reads take seconds even far behind; one still running after this is stuck.
QUERY_TIMEOUT_S = 120
_NS = 1_000_000_000
_GAP_NS = 600 * _NS  # traces whose spans lie closer than this are read back by one query
_MAX_READS = 16  # read-back queries a step at most (more: one query over their whole range)


Offload = Callable[..., Any]
"""Runs `fn(*args)` elsewhere and returns its result: the decode pool's worker processes,
so run assembly (pure Python, ~40 µs a span) does not hold this process's GIL."""


def trace_spans(
    cur: duckdb.DuckDBPyConnection,
    cols: str,
    org: str,
    trace_ids: list[str],
    started: tuple[int, int],
) -> pa.Table:
    """Columns `cols` of the stored spans of these traces of `org` that started in `started`
    (bounds, inclusive, that let Parquet min/max statistics skip old files)."""
    # The ids go in as an Arrow table: a long Python list parameter costs DuckDB far more to
    # bind than the scan itself.
    cur.register("_wanted", pa.table({"trace_id": sorted(trace_ids)}))
    try:
        table = cur.execute(
            f"""SELECT {cols} FROM {Signal.TRACES.value}
                WHERE org = ? AND start_time_unix_nano BETWEEN ? AND ?
                  AND trace_id IN (SELECT trace_id FROM _wanted)""",
            [org, *started],
        ).to_arrow_table(ARROW_BATCH_ROWS)
    finally:
        cur.unregister("_wanted")
    return table


def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


@dataclass
class _Trace:
    """One trace a step re-derives: the start times (ns) of what made it due (its changed
    spans, or its waiting runs), and DuckDB's `hash(org, trace_id)`."""

    lo: int
    hi: int
    key: int
    fed: bool  # its changed spans are in the step's window of the change feed


@dataclass
class _Work:
    """What one step recomputes."""

    window: Window  # the snapshots the step covers
    traces: dict[TraceKey, _Trace]
    deleted: bool = False  # spans were deleted (nothing to re-derive, but the watermark moves)

    def add(self, trace: TraceKey, lo: int, hi: int, key: int, *, fed: bool) -> None:
        old = self.traces.get(trace)
        if old is None:
            self.traces[trace] = _Trace(lo, hi, key, fed)
        else:
            old.lo, old.hi, old.fed = min(old.lo, lo), max(old.hi, hi), old.fed or fed


@dataclass
class _Plan:
    """How a step reads each trace's spans back: new traces within the start times the change
    feed showed; the others within bounds that hold every span and derived row they have."""

    new: list[TraceKey] = field(default_factory=list)
    stored: dict[TraceKey, tuple[int, int]] = field(default_factory=dict)


@dataclass
class DeriveStats:
    """What the deriver did, for /metrics."""

    steps: int = 0
    looks: int = 0  # steps finished, also those that found nothing to derive
    traces_new: int = 0  # seen for the first time (read within the feed's start times)
    traces_stored: int = 0  # read back from the store
    traces_uncovered: int = 0  # of those, read back within the longest trace (not known)
    spans_read_back: int = 0
    # Seconds spent by steps that derived something, waits included: reading changes and
    # spans, assembling in a worker, committing on the writer thread.
    read_s: float = 0.0
    assemble_s: float = 0.0
    commit_s: float = 0.0
    interrupted: int = 0  # queries interrupted past QUERY_TIMEOUT_S (their step retried)


class RunDeriver:
    """Runs derivation steps against `store`. `step()` blocks; `run_forever` loops it.

    A step handles at most `max_snapshots` snapshots and about `max_traces` traces (never less
    than one snapshot), so a backlog is worked off in bounded transactions.
    """

    def __init__(
        self,
        store: Store,
        assembler: RunsProcessor,
        *,
        max_snapshots: int = 1000,
        max_traces: int = 2000,
        clock: Callable[[], int] = time.time_ns,
        offload: Offload = _inline,
        lag: DerivationLag | None = None,
    ) -> None:
        self._store = store
        self._offload = offload
        self._assembler = assembler
        self._config = assembler.config
        self._max_snapshots = max_snapshots
        self._max_traces = max_traces
        self._clock = clock
        self._lag = lag
        self._tables_ready = False
        self._overdue = OverdueRuns(self._config, max_traces)
        self._feed = Feed(store, WATERMARK, max_snapshots=max_snapshots)
        self._max_trace_ns = self._config.max_trace_duration_s * _NS
        self._known = KnownTraces(self._max_trace_ns, max_traces=self._config.max_known_traces)
        self._known_to: int | None = None  # the snapshot `_known` is complete up to
        self.stats = DeriveStats()
        self.behind = False
        """True when the last step stopped at a bound and more changes are waiting."""

    def create_tables(self) -> None:
        def create(cur: duckdb.DuckDBPyConnection) -> None:
            had = {str(r[0]) for r in cur.execute(f"SHOW TABLES FROM {LAKE}").fetchall()}
            for name in DERIVED_TABLES:
                cur.execute(
                    create_derived_sql(name).replace(
                        "TABLE IF NOT EXISTS ", f"TABLE IF NOT EXISTS {LAKE}."
                    )
                )
                added = add_missing_columns(cur, name)
                if added:
                    log.info("added columns %s to %s", ", ".join(added), name)
            filled = add_run_keys(cur)
            if filled:
                log.info("filled run keys of %d runs", filled)
            if "run_tools" not in had and {"runs", "span_runs", "spans"} <= had:
                log.info("filled run_tools of the stored runs: %d rows", fill_run_tools(cur))

        self._store.call(create)
        self._tables_ready = True

    # -- one step ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._config.enabled

    def step(self, now_ns: int | None = None) -> int:
        """Re-derive traces changed since the watermark and runs overdue for a root; returns how
        many traces were re-derived. `now_ns` defaults to the clock (tests pass their own)."""
        if not self._tables_ready:
            self.create_tables()
        now = self._clock() if now_ns is None else now_ns
        if self._known_to is None:
            self._load_known(now)
        started = time.perf_counter()
        work = self._changed_traces()
        self._overdue_runs(work, now)
        self._linking_runs(work)
        if not work.traces and not work.deleted and (work.window.empty or not self.behind):
            # Nothing changed: leave the watermark, so idle steps write no snapshots of their own.
            if self._lag is not None and work.window.empty:
                self._lag.derived(work.window.since)
            self.stats.looks += 1
            return 0
        plan = self._plan(work, now)
        spans = self._spans(work, plan)
        read = time.perf_counter()
        rows = self._derive(spans, plan, now)
        assembled = time.perf_counter()
        try:
            self._store.call(lambda cur: self._commit(cur, work, plan, rows))
        except BaseException:
            self._feed.forget()
            raise
        self._feed.committed(work.window)
        self._learn(spans, work.window, now)
        stats = self.stats
        stats.steps += 1
        stats.looks += 1
        stats.read_s += read - started
        stats.assemble_s += assembled - read
        stats.commit_s += time.perf_counter() - assembled
        if self._lag is not None:
            self._lag.derived(work.window.until)
        if work.traces:
            self._overdue.runs_changed()
        return len(work.traces)

    def _changed_traces(self) -> _Work:
        window = self._feed.window()
        work = _Work(window.hold(), {})
        self.behind = False
        if window.empty:
            return work
        work.window = window
        if self._feed.is_quiet(window):
            # These snapshots were read last step and changed no span: an idle store's
            # watermark stays put (see `step`), so without this every idle step re-reads them.
            self.behind = window.behind
            return work
        # Only the spans table's feed is read, so snapshots of our own writes change nothing.
        changes = self._store.query(
            # Spans are deleted only by retention and the disk cap; runs keep their own TTL,
            # so an expired span must not re-derive (and shrink) its run. A deletion still
            # moves the watermark, or snapshot expiry would wait on it forever.
            f"""SELECT snapshot_id, org, trace_id, hash(org, trace_id),
                       min(start_time_unix_nano) FILTER (change_type <> 'delete'),
                       max(start_time_unix_nano) FILTER (change_type <> 'delete'),
                       bool_or(change_type <> 'delete')
                FROM ducklake_table_changes('{LAKE}', 'main', '{Signal.TRACES.value}', ?, ?)
                GROUP BY ALL ORDER BY snapshot_id""",
            [window.since + 1, window.until],
        )
        taken = window.since  # the last snapshot whose changes are in `work`
        for snapshot, org, trace_id, key, lo, hi, inserted in changes:
            if snapshot != taken and taken > window.since and len(work.traces) >= self._max_traces:
                work.window = window.shrink(snapshot - 1)
                break
            if inserted:
                work.add((org, trace_id), int(lo or 0), int(hi or 0), int(key), fed=True)
            else:
                work.deleted = True
            taken = snapshot
        self.behind = work.window.behind
        self._feed.remember(work.window, quiet=not work.traces and not work.deleted)
        return work

    def _overdue_runs(self, work: _Work, now: int) -> None:
        """Runs still waiting for their root past the timeout: re-derive them as timeouts."""
        for org, trace_id, key, lo, hi in self._overdue.due(self._store, now):
            work.add((org, trace_id), lo, hi, key, fed=False)

    def _linking_runs(self, work: _Work) -> None:
        """Traces whose runs link into a changed trace: their parent run may have changed."""
        by_org: dict[str, list[str]] = {}
        for org, trace_id in work.traces:
            by_org.setdefault(org, []).append(trace_id)
        for org, trace_ids in sorted(by_org.items()):
            with self._cursor() as cur:
                cur.register("_changed", pa.table({"trace_id": trace_ids}))
                rows = cur.execute(
                    """SELECT trace_id, hash(org, trace_id),
                              min(epoch_ns(started_at)), max(epoch_ns(started_at))
                       FROM runs WHERE org = ? AND link_trace_id IS NOT NULL
                         AND link_trace_id IN (SELECT trace_id FROM _changed)
                       GROUP BY ALL""",
                    [org],
                ).fetchall()
            for trace_id, key, lo, hi in rows:
                work.add((org, trace_id), int(lo), int(hi), int(key), fed=False)

    def _plan(self, work: _Work, now: int) -> _Plan:
        """New traces, and the start-time bounds of the others' spans and derived rows."""
        if self._known_to is None or work.window.since > self._known_to:
            # Another deriver moved the watermark: what we knew has a gap.
            self._load_known(now)
        plan = _Plan()
        if not work.traces:
            return plan
        keys = sorted(work.traces)
        hashes = np.fromiter((work.traces[k].key for k in keys), np.uint64, len(keys))
        found, known_lo, known_hi = self._known.find(hashes)
        longest, covered = self._max_trace_ns, self._known.covered_from
        for i, key in enumerate(keys):
            t = work.traces[key]
            if found[i]:
                lo, hi = min(int(known_lo[i]), t.lo), max(int(known_hi[i]), t.hi)
                if hi - longest < covered:
                    lo = min(lo, hi - longest)  # spans before the coverage may exist
                plan.stored[key] = (lo, hi)
            elif t.fed and t.hi - longest >= covered:
                plan.new.append(key)
            else:
                plan.stored[key] = (t.hi - longest, t.lo + longest)
                self.stats.traces_uncovered += 1
        self.stats.traces_new += len(plan.new)
        self.stats.traces_stored += len(plan.stored)
        return plan

    def _load_known(self, now: int) -> None:
        with self._cursor() as cur:
            cur.execute("BEGIN")  # the snapshot and the traces read in one transaction
            found = cur.execute(f"SELECT id FROM {LAKE}.current_snapshot()").fetchone()
            self._known.load(cur, now)
            cur.execute("COMMIT")
        self._known_to = int(found[0]) if found else -1

    def _spans(self, work: _Work, plan: _Plan) -> pa.Table:
        """Every span of the traces to derive, read back from the store: a new trace within the
        start times the change feed showed (all its spans are in the step's window), a known
        one within the extent remembered for it."""
        # New traces were read from `ducklake_table_changes` once; under sustained load that
        # read twice waited forever inside DuckDB (no CPU, deaf to interrupts), so they are
        # read like the others: the same pruned scan, by start time and trace id.
        new = {k: (work.traces[k].lo, work.traces[k].hi) for k in plan.new}
        with self._cursor() as cur:
            fresh = self._read_back(cur, new)
            stored = self._read_back(cur, plan.stored)
        self.stats.spans_read_back += sum(p.num_rows for p in stored)
        return _concat(fresh + stored)

    def _read_back(
        self, cur: duckdb.DuckDBPyConnection, bounds: dict[TraceKey, tuple[int, int]]
    ) -> list[pa.Table]:
        """Stored spans of these traces, each read within its start-time bounds (traces whose
        bounds lie close together share a query): the bounds let Parquet min/max statistics
        skip the files of other times."""
        cols = ", ".join(self._assembler.columns)
        out = []
        for org, lo, hi, trace_ids in _groups(bounds):
            out.append(
                trace_spans(cur, f"hash(org, trace_id) AS _h, {cols}", org, trace_ids, (lo, hi))
            )
        return out

    def _derive(self, spans: pa.Table, plan: _Plan, now: int) -> dict[str, pa.Table]:
        if spans.num_rows == 0:
            return {}
        linked = self._linked(spans, plan)
        data: dict[str, bytes] = self._offload(
            assemble_ipc, self._assembler, to_ipc(spans), to_ipc(linked), now
        )
        return {name: from_ipc(ipc) for name, ipc in data.items()}

    def _linked(self, spans: pa.Table, plan: _Plan) -> pa.Table:
        """Spans of the traces that these spans link to and that are not derived here (their
        runs are parents of ours), read within the longest trace of the linking trace."""
        links = spans.filter(
            pc.and_(pc.is_valid(spans["links"]), pc.not_equal(spans["links"], "[]"))
        ).select(["org", "trace_id", "links", "start_time_unix_nano"])
        if links.num_rows == 0:
            return spans.schema.empty_table()
        here = set(zip(spans["org"].to_pylist(), spans["trace_id"].to_pylist(), strict=True))
        wanted: dict[TraceKey, tuple[int, int]] = {}
        for row in links.to_pylist():
            for target in _linked_traces(row["links"]):
                key = (row["org"], target)
                if key in here:
                    continue
                start = int(row["start_time_unix_nano"])
                lo, hi = wanted.get(key, (start, start))
                wanted[key] = (min(lo, start), max(hi, start))
        longest = self._max_trace_ns
        bounds = {k: (lo - longest, hi + longest) for k, (lo, hi) in wanted.items()}
        with self._cursor() as cur:
            return _concat(self._read_back(cur, bounds), spans.schema)

    def _commit(
        self,
        cur: duckdb.DuckDBPyConnection,
        work: _Work,
        plan: _Plan,
        rows: dict[str, pa.Table],
    ) -> None:
        self._feed.move(cur, work.window)
        match = (
            "EXISTS (SELECT 1 FROM _traces k WHERE k.org = {t}.org AND k.trace_id = {t}.trace_id)"
        )
        # A new trace has no derived row to replace; a stored one's rows started within the
        # bounds of its spans (a run starts with one of its spans).
        for org, lo, hi, trace_ids in _groups(plan.stored):
            cur.register(
                "_traces", pa.table({"org": [org] * len(trace_ids), "trace_id": trace_ids})
            )
            cur.execute(
                "DELETE FROM runs WHERE started_at BETWEEN make_timestamptz(?::BIGINT) "
                f"AND make_timestamptz(?::BIGINT) AND {match.format(t='runs')}",
                [lo // 1000, hi // 1000],
            )
            cur.execute(
                "DELETE FROM span_runs WHERE start_time_unix_nano BETWEEN ? AND ? AND "
                + match.format(t="span_runs"),
                [lo, hi],
            )
            cur.execute(
                "DELETE FROM run_tools WHERE started_at BETWEEN make_timestamptz(?::BIGINT) "
                f"AND make_timestamptz(?::BIGINT) AND {match.format(t='run_tools')}",
                [lo // 1000, hi // 1000],
            )
            cur.unregister("_traces")
        for name, table in rows.items():
            if table.num_rows:
                cur.register("_derived", table)
                # By name: a store's columns are in the order they were added to it.
                cur.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _derived")
                cur.unregister("_derived")

    def _learn(self, spans: pa.Table, window: Window, now: int) -> None:
        """After the commit: the traces just derived are known, with their spans' extent."""
        if spans.num_rows:
            extents = spans.group_by("_h").aggregate(
                [("start_time_unix_nano", "min"), ("start_time_unix_nano", "max")]
            )
            self._known.add(
                extents["_h"].to_numpy().astype(np.uint64),
                extents["start_time_unix_nano_min"].to_numpy().astype(np.int64),
                extents["start_time_unix_nano_max"].to_numpy().astype(np.int64),
                now,
            )
        if self._known_to is not None and window.since <= self._known_to:
            self._known_to = max(self._known_to, window.until)

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of the store whose queries are interrupted past `QUERY_TIMEOUT_S`: a query
        that long fails its step, which the loop retries, rather than holding derivation (and,
        past the lag bound, span ingest). A query DuckDB never returns from ignores this too."""
        cur = self._store.cursor()
        timer = threading.Timer(QUERY_TIMEOUT_S, self._interrupt, (cur,))
        timer.daemon = True
        timer.start()
        try:
            yield cur
        finally:
            timer.cancel()
            cur.close()

    def _interrupt(self, cur: duckdb.DuckDBPyConnection) -> None:
        self.stats.interrupted += 1
        log.warning("run derivation: a query ran past %d s; interrupting the step", QUERY_TIMEOUT_S)
        cur.interrupt()

    # -- the loop ------------------------------------------------------------------------------

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Step on commits, at most once every `interval_ms` (at once while behind), until
        `stop` is set; without commits, every `IDLE_TICK_S` (at least `interval_ms`) for runs
        overdue for their root."""
        if not self._config.enabled:
            return

        def step() -> bool:
            self.step()
            return self.behind

        wake = self._store.commits.event()
        interval = max(self._config.interval_ms / 1000, IDLE_TICK_S)
        await run_steps(
            step,
            stop,
            interval,
            "run derivation",
            wake=wake,
            min_gap_s=self._config.interval_ms / 1000,
        )


def _groups(
    bounds: dict[TraceKey, tuple[int, int]],
) -> Iterable[tuple[str, int, int, list[str]]]:
    """(org, lo, hi, trace ids): traces of one org whose bounds lie within `_GAP_NS` of each
    other share one range; past `_MAX_READS` ranges an org's traces share one."""
    by_org: dict[str, list[tuple[int, int, str]]] = {}
    for (org, trace_id), (lo, hi) in bounds.items():
        by_org.setdefault(org, []).append((lo, hi, trace_id))
    for org, items in sorted(by_org.items()):
        items.sort()
        ranges: list[list[Any]] = []  # [lo, hi, trace ids]
        for lo, hi, trace_id in items:
            if ranges and lo <= ranges[-1][1] + _GAP_NS:
                ranges[-1][1] = max(ranges[-1][1], hi)
                ranges[-1][2].append(trace_id)
            else:
                ranges.append([lo, hi, [trace_id]])
        if len(ranges) > _MAX_READS:
            every = [t for r in ranges for t in r[2]]
            ranges = [[ranges[0][0], max(r[1] for r in ranges), every]]
        for lo, hi, trace_ids in ranges:
            yield org, int(lo), int(hi), sorted(trace_ids)


def _concat(parts: list[pa.Table], schema: pa.Schema | None = None) -> pa.Table:
    parts = [p for p in parts if p.num_rows]
    if not parts:
        if schema is not None:
            return schema.empty_table()
        return pa.table({"_h": pa.array([], pa.uint64())})
    return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]


def _linked_traces(links: Any) -> list[str]:
    """Trace ids a span's `links` JSON points at."""
    if not links or links == "[]":
        return []
    try:
        parsed = json.loads(links) if isinstance(links, str) else links
    except ValueError:
        return []
    return [
        str(link["trace_id"]) for link in parsed if isinstance(link, dict) and link.get("trace_id")
    ]
