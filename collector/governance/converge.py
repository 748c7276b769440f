"""The raw `spans` table converging to one row per span on a shared store: a span re-sent to
another node (a client's retry after a node died) is committed by both, as each node's dedup
window (`collector/store/dedup.py`) knows only its own spans. This change-feed consumer reads
the spans committed since its watermark, finds the keys stored more than once, and deletes every
copy but the first, in the transaction that moves its watermark.

Derived data never double-counts meanwhile (derivation keeps one copy per span id); this only
bounds how long the raw table and the views over it (`llm_calls`, `tool_calls`) show a copy:
one step of this job after the copy's commit. `collector/service.py` runs it as a leased job.
"""

from __future__ import annotations

import asyncio
import logging

import duckdb

from collector.model import Signal
from collector.runs.feed import Feed, Window, run_steps
from collector.store.lake import LAKE
from collector.store.writer import Store

log = logging.getLogger(__name__)

WATERMARK = "spans-dedup"
IDLE_TICK_S = 60.0  # woken by commits; the tick is a safety net only
HOLD_SNAPSHOTS = 100  # a watermark with nothing to do moves once this far behind
SPANS = f"{LAKE}.{Signal.TRACES.value}"


class SpanConvergence:
    def __init__(self, store: Store, *, max_snapshots: int = 200) -> None:
        self._store = store
        self._feed = Feed(store, WATERMARK, max_snapshots=max_snapshots)
        self.behind = False
        self.deleted = 0

    def step(self) -> int:
        """Delete the extra copies of spans committed since the watermark; how many."""
        window = self._feed.window()
        self.behind = window.behind
        if window.empty or self._feed.is_quiet(window):
            return 0
        extra = self._duplicates(window)
        if not extra:
            # Nothing doubled: hold the watermark (an idle store gets no snapshots of ours; the
            # window is remembered, so it is not read again), unless it would hold snapshot
            # expiry back for long.
            self._feed.remember(window, quiet=True)
            if not window.behind and window.until - window.since < HOLD_SNAPSHOTS:
                return 0

        def commit(cur: duckdb.DuckDBPyConnection) -> None:
            self._feed.move(cur, window)
            if extra:
                cur.execute(
                    f"DELETE FROM {SPANS} WHERE rowid IN (SELECT unnest(?::BIGINT[]))", [extra]
                )

        try:
            self._store.call(commit)
        except BaseException:
            self._feed.forget()
            raise
        self._feed.committed(window)
        self.deleted += len(extra)
        if extra:
            log.info("removed %d copies of spans stored by more than one node", len(extra))
        return len(extra)

    def _duplicates(self, window: Window) -> list[int]:
        """Row ids of every copy but the first of the spans inserted in `window`."""
        rows = self._store.query(
            f"""WITH fresh AS (
                  SELECT org, trace_id, span_id,
                         min(start_time_unix_nano) AS lo, max(start_time_unix_nano) AS hi
                  FROM ducklake_table_changes('{LAKE}', 'main', '{Signal.TRACES.value}', ?, ?)
                  WHERE change_type = 'insert'
                  GROUP BY ALL)
                SELECT s.rowid FROM {SPANS} s
                JOIN fresh f ON s.org = f.org AND s.trace_id = f.trace_id
                     AND s.span_id = f.span_id
                WHERE s.start_time_unix_nano BETWEEN (SELECT min(lo) FROM fresh)
                                                 AND (SELECT max(hi) FROM fresh)
                QUALIFY row_number() OVER (
                  PARTITION BY s.org, s.trace_id, s.span_id ORDER BY s.rowid) > 1""",
            [window.since + 1, window.until],
        )
        return [int(r[0]) for r in rows]

    async def run_forever(self, stop: asyncio.Event) -> None:
        def step() -> bool:
            self.step()
            return self.behind

        wake = self._store.commits.event()
        await run_steps(step, stop, IDLE_TICK_S, "span convergence", wake=wake)
