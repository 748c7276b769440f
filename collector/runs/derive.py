"""Derived processing: keeps the `runs` and `span_runs` tables in step with committed spans.

Reads DuckLake's change feed of `spans` from the `runs` watermark, re-assembles every touched
trace whole with the run assembler (`processors/runs/assemble.py`), and writes the rows and the
new watermark in one transaction: a crash anywhere redoes that step, exactly once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from collector.model import Signal
from collector.runs.feed import Feed, Window, run_steps
from collector.runs.overdue import OverdueRuns
from collector.runs.upkeep import add_missing_columns, add_run_keys
from collector.store.keys import run_key
from collector.store.lake import LAKE
from collector.store.schema import DERIVED_TABLES, create_derived_sql, derived_arrow_schema
from collector.store.writer import Store
from processors.runs.assemble import RunsProcessor

log = logging.getLogger(__name__)

WATERMARK = "runs"
IDLE_TICK_S = 5.0  # steps are woken by commits; this tick only finds runs overdue for a root
_NS = 1_000_000_000
TraceKey = tuple[str, str]  # (org, trace_id)


Task = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # (a trace's spans, spans it links to)
Offload = Callable[..., Any]
"""Runs `fn(*args)` elsewhere and returns its result: the decode pool's worker processes,
so run assembly (pure Python, ~40 µs a span) does not hold this process's GIL."""


def assemble_tasks(
    assembler: RunsProcessor, tasks: list[Task], now_ns: int
) -> dict[str, list[dict[str, Any]]]:
    """Assemble many traces (module-level, so a worker process can run it)."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in DERIVED_TABLES}
    for rows, others in tasks:
        for name, derived in assembler.assemble(rows, now_ns, others).items():
            out[name].extend(derived)
    for run in out["runs"]:
        run["run_key"] = run_key(run["org"], run["run_id"])
        run["parent_run_key"] = run_key(run["org"], run.get("parent_run_id"))
    return out


def trace_spans(
    cur: duckdb.DuckDBPyConnection,
    cols: str,
    org: str,
    trace_ids: list[str],
    started: tuple[int, int],
) -> list[dict[str, Any]]:
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
        ).to_arrow_table()
    finally:
        cur.unregister("_wanted")
    spans: list[dict[str, Any]] = table.to_pylist()
    return spans


def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


@dataclass
class _Work:
    """What one step recomputes: traces with the start-time window their spans lie in."""

    window: Window  # the snapshots the step covers
    windows: dict[TraceKey, tuple[int, int]]
    deleted: bool = False  # spans were deleted (nothing to re-derive, but the watermark moves)

    def add(self, key: TraceKey, lo: int, hi: int) -> None:
        old = self.windows.get(key)
        self.windows[key] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))


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
    ) -> None:
        self._store = store
        self._offload = offload
        self._assembler = assembler
        self._config = assembler.config
        self._max_snapshots = max_snapshots
        self._max_traces = max_traces
        self._clock = clock
        self._tables_ready = False
        self._overdue = OverdueRuns(self._config, max_traces)
        self._feed = Feed(store, WATERMARK, max_snapshots=max_snapshots)
        self.behind = False
        """True when the last step stopped at a bound and more changes are waiting."""

    def create_tables(self) -> None:
        def create(cur: duckdb.DuckDBPyConnection) -> None:
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
        work = self._changed_traces()
        self._overdue_runs(work, now)
        self._linking_runs(work)
        if not work.windows and not work.deleted and (work.window.empty or not self.behind):
            # Nothing changed: leave the watermark, so idle steps write no snapshots of their own.
            return 0
        rows = self._derive(work, now)
        try:
            self._store.call(lambda cur: self._commit(cur, work, rows))
        except BaseException:
            self._feed.forget()
            raise
        self._feed.committed(work.window)
        if work.windows:
            self._overdue.runs_changed()
        return len(work.windows)

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
            f"""SELECT snapshot_id, org, trace_id,
                       min(start_time_unix_nano) FILTER (change_type <> 'delete'),
                       max(start_time_unix_nano) FILTER (change_type <> 'delete'),
                       bool_or(change_type <> 'delete')
                FROM ducklake_table_changes('{LAKE}', 'main', '{Signal.TRACES.value}', ?, ?)
                GROUP BY ALL ORDER BY snapshot_id""",
            [window.since + 1, window.until],
        )
        taken = window.since  # the last snapshot whose changes are in `work`
        for snapshot, org, trace_id, lo, hi, inserted in changes:
            if snapshot != taken and taken > window.since and len(work.windows) >= self._max_traces:
                work.window = window.shrink(snapshot - 1)
                break
            if inserted:
                work.add((org, trace_id), int(lo or 0), int(hi or 0))
            else:
                work.deleted = True
            taken = snapshot
        self.behind = work.window.behind
        self._feed.remember(work.window, quiet=not work.windows and not work.deleted)
        return work

    def _overdue_runs(self, work: _Work, now: int) -> None:
        """Runs still waiting for their root past the timeout: re-derive them as timeouts."""
        for org, trace_id, lo, hi in self._overdue.due(self._store, now):
            work.add((org, trace_id), lo, hi)

    def _linking_runs(self, work: _Work) -> None:
        """Traces whose runs link into a changed trace: their parent run may have changed."""
        by_org: dict[str, list[str]] = {}
        for org, trace_id in work.windows:
            by_org.setdefault(org, []).append(trace_id)
        for org, trace_ids in sorted(by_org.items()):
            cur = self._store.cursor()
            try:
                cur.register("_changed", pa.table({"trace_id": trace_ids}))
                rows = cur.execute(
                    """SELECT trace_id, min(epoch_ns(started_at)), max(epoch_ns(started_at))
                       FROM runs WHERE org = ? AND link_trace_id IS NOT NULL
                         AND link_trace_id IN (SELECT trace_id FROM _changed)
                       GROUP BY ALL""",
                    [org],
                ).fetchall()
            finally:
                cur.close()
            for trace_id, lo, hi in rows:
                work.add((org, trace_id), int(lo), int(hi))

    def _derive(self, work: _Work, now: int) -> dict[str, list[dict[str, Any]]]:
        spans = self._load(work.windows)
        linked_keys: dict[TraceKey, tuple[int, int]] = {}
        for (org, _), rows in spans.items():
            for row in rows:
                for trace_id in _linked_traces(row.get("links")):
                    if (org, trace_id) not in spans:
                        lo, hi = work.windows[(org, row["trace_id"])]
                        linked_keys[(org, trace_id)] = (lo, hi)
        linked = self._load(linked_keys) if linked_keys else {}
        tasks: list[Task] = []
        for key in sorted(spans):
            rows = spans[key]
            targets = {t for r in rows for t in _linked_traces(r.get("links"))}
            others = [
                r
                for t in sorted(targets)
                for r in (spans.get((key[0], t)) or linked.get((key[0], t)) or [])
            ]
            tasks.append((rows, others))
        result: dict[str, list[dict[str, Any]]] = self._offload(
            assemble_tasks, self._assembler, tasks, now
        )
        return result

    def _load(
        self, windows: Mapping[TraceKey, tuple[int, int]]
    ) -> dict[TraceKey, list[dict[str, Any]]]:
        """All stored spans of these traces, found within their start windows widened by the
        longest trace: the bounds let Parquet min/max statistics skip old files."""
        widen = self._config.max_trace_duration_s * _NS
        by_org: dict[str, list[TraceKey]] = {}
        for key in windows:
            by_org.setdefault(key[0], []).append(key)
        cols = ", ".join(self._assembler.columns)
        out: dict[TraceKey, list[dict[str, Any]]] = {key: [] for key in windows}
        for org, keys in sorted(by_org.items()):
            lo = min(windows[k][0] for k in keys) - widen
            hi = max(windows[k][1] for k in keys) + widen
            cur = self._store.cursor()
            try:
                for span in trace_spans(cur, cols, org, [k[1] for k in keys], (lo, hi)):
                    out[(org, span["trace_id"])].append(span)
            finally:
                cur.close()
        return out

    def _commit(
        self, cur: duckdb.DuckDBPyConnection, work: _Work, rows: dict[str, list[dict[str, Any]]]
    ) -> None:
        self._feed.move(cur, work.window)
        if work.windows:
            keys = sorted(work.windows)
            cur.register(
                "_traces",
                pa.table({"org": [k[0] for k in keys], "trace_id": [k[1] for k in keys]}),
            )
            match = (
                "EXISTS (SELECT 1 FROM _traces k"
                " WHERE k.org = {t}.org AND k.trace_id = {t}.trace_id)"
            )
            cur.execute(f"DELETE FROM runs WHERE {match.format(t='runs')}")
            widen = self._config.max_trace_duration_s * _NS
            lo = min(w[0] for w in work.windows.values()) - widen
            hi = max(w[1] for w in work.windows.values()) + widen
            cur.execute(
                "DELETE FROM span_runs WHERE start_time_unix_nano BETWEEN ? AND ? AND "
                + match.format(t="span_runs"),
                [lo, hi],
            )
            cur.unregister("_traces")
            for name, derived in rows.items():
                if derived:
                    cur.register(
                        "_derived", pa.Table.from_pylist(derived, derived_arrow_schema(name))
                    )
                    # By name: a store's columns are in the order they were added to it.
                    cur.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _derived")
                    cur.unregister("_derived")

    # -- the loop ------------------------------------------------------------------------------

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Step on every commit (at once while behind) until `stop` is set; without commits,
        every `IDLE_TICK_S` (at least `interval_ms`) for runs overdue for their root."""
        if not self._config.enabled:
            return

        def step() -> bool:
            self.step()
            return self.behind

        wake = self._store.commits.event()
        interval = max(self._config.interval_ms / 1000, IDLE_TICK_S)
        await run_steps(step, stop, interval, "run derivation", wake=wake)


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
