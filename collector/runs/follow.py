"""Consumers of finished runs: alert rules, ROI from traced runs, output rules on run outputs.

Reads DuckLake's change feed of the derived `runs` table from each consumer's own watermark and
hands the consumer the finished runs; its writes and the watermark move commit in one
transaction, so each committed fact is handled exactly once, and resumably after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb

from collector.model import StoreUnavailable
from collector.store.schema import RUN_COLUMNS
from collector.store.watermarks import read_watermark, stored_watermark, write_watermark
from collector.store.writer import LAKE, Store

log = logging.getLogger(__name__)

# What a consumer gets of a run: every column but the span ids kept for the run detail.
_RUN_COLS = ", ".join(c.name for c in RUN_COLUMNS if c.name != "call_span_ids")


class RunConsumer(Protocol):
    """One feature fed by finished runs (see `docs/` of alerts, ROI and output rules)."""

    @property
    def name(self) -> str:
        """Its watermark's name in `watermarks`; unique among consumers."""
        ...

    def create_tables(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Idempotent DDL, run once at start on the writer thread."""
        ...

    def consume(
        self, cur: duckdb.DuckDBPyConnection, runs: list[dict[str, Any]], now_ns: int
    ) -> None:
        """Handle `runs` (finished, latest version of each, ordered by `ended_at`) inside the
        transaction that moves the watermark; called with `[]` on idle ticks. A run re-derived
        later comes again, so this must be idempotent per (org, run_id)."""
        ...

    async def after_commit(self) -> None:
        """After each step, on the event loop: network work (notifications, evaluation)."""
        ...


class WatermarkMoved(Exception):
    """Another follower moved this consumer's watermark first; the step is dropped."""


@dataclass
class _Batch:
    since: int
    until: int
    runs: list[dict[str, Any]]
    behind: bool = False  # stopped at the snapshot bound: more changes wait


class RunFollower:
    """Feeds `consumers` from the runs change feed. `step()` blocks; `run_forever` loops it.

    A step reads at most `max_snapshots` snapshots per consumer, so a backlog is worked off in
    bounded transactions. A consumer seen for the first time starts at the current snapshot:
    enabling alerts on a year of history must not fire a year of alerts.
    """

    def __init__(
        self,
        store: Store,
        consumers: Sequence[RunConsumer],
        *,
        interval_s: float = 1.0,
        max_snapshots: int = 500,
        idle_move_s: float = 10.0,
        clock: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [c.name for c in consumers]
        if len(set(names)) != len(names):
            raise ValueError(f"run consumers need unique names, got {names}")
        self._store = store
        self._consumers = list(consumers)
        self._interval_s = interval_s
        self._max_snapshots = max_snapshots
        self._clock = clock
        self._idle_move_s = idle_move_s
        self._monotonic = monotonic
        self._moved_at: dict[str, float] = {}
        # Each consumer's watermark as its last commit left it: only this follower moves them
        # (a commit re-reads it in its transaction and fails if it was moved meanwhile).
        self._marks: dict[str, int] = {}
        self._quiet: tuple[int, int] | None = None  # (since, until) of runs' feed with no change
        self._ready = False
        self.behind = False
        """True when the last step stopped at the snapshot bound and more changes wait."""

    @property
    def consumers(self) -> list[RunConsumer]:
        return list(self._consumers)

    def create_tables(self) -> None:
        def create(cur: duckdb.DuckDBPyConnection) -> None:
            current = int(_one(cur, f"SELECT id FROM {LAKE}.current_snapshot()"))
            for consumer in self._consumers:
                consumer.create_tables(cur)
                if read_watermark(cur, consumer.name) is None:
                    write_watermark(cur, consumer.name, current)

        if self._consumers:
            self._store.call(create)
        self._ready = True

    # -- one step ----------------------------------------------------------------------------

    def step(self, now_ns: int | None = None) -> int:
        """Hand each consumer the runs finished since its watermark (or `[]`); returns how many
        runs were handed out in all. A failing consumer is logged and retried next step; the
        others go on."""
        if not self._ready:
            self.create_tables()
        now = self._clock() if now_ns is None else now_ns
        current = int(self._store.query(f"SELECT id FROM {LAKE}.current_snapshot()")[0][0])
        handed = 0
        behind = False
        batches: dict[int, _Batch] = {}  # consumers at the same watermark share one read
        for consumer in self._consumers:
            since = self._marks.get(consumer.name)
            if since is None:
                since = stored_watermark(self._store, consumer.name)
            batch = batches.get(since)
            if batch is None:
                last_move = self._moved_at.get(consumer.name, -float("inf"))
                batch = batches[since] = self._read(since, current, last_move)
            behind = behind or batch.behind
            try:
                self._store.call(
                    functools.partial(self._commit, consumer=consumer, batch=batch, now=now)
                )
            except StoreUnavailable:
                self._marks.pop(consumer.name, None)
                raise
            except Exception:
                self._marks.pop(consumer.name, None)  # read it again next step
                log.exception("run consumer %s failed; retrying next step", consumer.name)
                continue
            self._marks[consumer.name] = batch.until
            handed += len(batch.runs)
            if batch.until != batch.since:
                self._moved_at[consumer.name] = self._monotonic()
        self.behind = behind
        return handed

    def _read(self, since: int, current: int, last_move: float) -> _Batch:
        if current <= since:
            return _Batch(since, since, [])
        until = min(current, since + self._max_snapshots)
        caught_up = until == current
        if self._quiet == (since, until):
            # Read last step and no run changed in them (snapshots never change).
            if caught_up and self._monotonic() - last_move < self._idle_move_s:
                return _Batch(since, since, [])
            return _Batch(since, until, [], behind=not caught_up)
        cur = self._store.cursor()
        try:
            table = cur.execute(
                f"""SELECT {_RUN_COLS} FROM (
                        SELECT *, row_number() OVER (
                            PARTITION BY org, run_id ORDER BY snapshot_id DESC, rowid DESC) AS n
                        FROM ducklake_table_changes('{LAKE}', 'main', 'runs', ?, ?)
                        WHERE change_type IN ('insert', 'update_postimage')
                    ) WHERE n = 1
                    ORDER BY ended_at, org, run_id""",
                [since + 1, until],
            ).to_arrow_table()
        finally:
            cur.close()
        self._quiet = (since, until) if table.num_rows == 0 else None
        if table.num_rows == 0 and caught_up and self._monotonic() - last_move < self._idle_move_s:
            # No run changed: the snapshots since are other writes (ingest, our own watermark
            # moves). Moving past them each step would write a snapshot a step forever, so an
            # idle watermark moves only every `idle_move_s`, enough to let snapshot expiry on.
            return _Batch(since, since, [])
        runs = [r for r in table_rows(table) if r["status"] != "running"]
        return _Batch(since, until, runs, behind=until < current)

    def _commit(
        self, cur: duckdb.DuckDBPyConnection, consumer: RunConsumer, batch: _Batch, now: int
    ) -> None:
        stored = read_watermark(cur, consumer.name)
        if stored != batch.since:
            raise WatermarkMoved(f"{consumer.name} watermark is {stored}, read {batch.since}")
        consumer.consume(cur, batch.runs, now)
        if batch.until != batch.since:
            write_watermark(cur, consumer.name, batch.until)

    async def after_commit(self) -> None:
        for consumer in self._consumers:
            try:
                await consumer.after_commit()
            except Exception:
                log.exception("run consumer %s: after-commit work failed", consumer.name)

    async def aclose(self) -> None:
        """Release what consumers hold (HTTP clients of their outboxes), for those that have an
        `aclose`; after the last step."""
        for consumer in self._consumers:
            close = getattr(consumer, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("run consumer %s: close failed", consumer.name)

    # -- the loop ------------------------------------------------------------------------------

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Step every `interval_s` (at once while behind) until `stop` is set."""
        while self._consumers and not stop.is_set():
            try:
                await asyncio.to_thread(self.step)
            except StoreUnavailable:
                log.warning("run consumers paused: the store is unavailable")
                self.behind = False
            except Exception:
                log.exception("run consumer step failed; retrying")
                self.behind = False
            await self.after_commit()
            if self.behind:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)


def table_rows(table: Any) -> list[dict[str, Any]]:
    """An Arrow table as a list of row dicts."""
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def _one(cur: duckdb.DuckDBPyConnection, sql: str) -> Any:
    found = cur.execute(sql).fetchone()
    return None if found is None else found[0]
