"""Consumers of finished runs: alert rules, ROI from traced runs, output rules on run outputs.

Reads DuckLake's change feed of the derived `runs` table from each consumer's own watermark and
hands the consumer the finished runs; its writes and the watermark move commit in one
transaction, so each committed fact is handled exactly once, and resumably after a crash.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb

from collector.model import StoreUnavailable
from collector.runs.feed import Feed, Window, current_snapshot, move_feeds, run_steps
from collector.store.lake import ARROW_BATCH_ROWS, LAKE
from collector.store.schema import RUN_COLUMNS
from collector.store.writer import Store

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
        transaction that moves the watermark; called with `[]` on a tick when `due()`. A run
        re-derived later comes again, so this must be idempotent per (org, run_id)."""
        ...

    def due(self) -> bool:
        """Whether time-based work waits (e.g. alert windows aggregated since the last tick),
        so that `consume([])` has something to write on a tick where no run finished."""
        ...

    async def after_commit(self) -> None:
        """After each step, on the event loop: network work (notifications, evaluation)."""
        ...


@dataclass
class _Batch:
    window: Window  # held (empty) when the watermark is to stay put
    runs: list[dict[str, Any]]
    quiet: bool = False  # the window's runs feed held no change

    @property
    def behind(self) -> bool:
        """Stopped at the snapshot bound: more changes wait."""
        return not self.window.empty and self.window.behind


class RunFollower:
    """Feeds `consumers` from the runs change feed. `step()` blocks; `run_forever` loops it,
    woken by commits but at most once per `min_gap_s`.

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
        min_gap_s: float = 0.0,
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
        self._min_gap_s = min_gap_s
        self._clock = clock
        self._idle_move_s = idle_move_s
        self._settled = -1  # the store's snapshot when this follower last finished a step
        self._monotonic = monotonic
        self._moved_at: dict[str, float] = {}
        self._feeds = {n: Feed(store, n, max_snapshots=max_snapshots) for n in names}
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
                self._feeds[consumer.name].start_at(cur, current)

        if self._consumers:
            self._store.call(create)
        self._ready = True

    # -- one step ----------------------------------------------------------------------------

    def step(self, now_ns: int | None = None) -> int:
        """Hand each consumer the runs finished since its watermark (or `[]`); returns how many
        runs were handed out in all. Consumers at the same watermark share one read and one
        transaction; if that transaction fails, each commits alone, so a failing consumer is
        logged and retried next step while the others go on."""
        if not self._ready:
            self.create_tables()
        now = self._clock() if now_ns is None else now_ns
        current = current_snapshot(self._store)
        if (
            current == self._settled
            and not self.behind
            and not any(c.due() for c in self._consumers)
        ):
            # No snapshot since this follower's own last writes: nothing can have finished.
            return 0
        behind = False
        batches: dict[int, _Batch] = {}  # consumers at the same watermark share one read
        sharing: dict[int, list[RunConsumer]] = {}  # ... and one transaction
        for consumer in self._consumers:
            feed = self._feeds[consumer.name]
            window = feed.window(current)
            batch = batches.get(window.since)
            if batch is None:
                last_move = self._moved_at.get(consumer.name, -float("inf"))
                batch = batches[window.since] = self._read(feed, window, last_move)
            feed.remember(window, quiet=batch.quiet)
            behind = behind or batch.behind
            if batch.window.empty and not batch.runs and not consumer.due():
                continue  # an idle tick: no transaction, no snapshot, nothing to read
            sharing.setdefault(window.since, []).append(consumer)
        handed = commits = 0
        failed = False
        for since, consumers in sharing.items():
            batch = batches[since]
            # Under load every transaction on the lake costs the one writer thread tens of ms,
            # whatever it writes: the consumers of a batch commit in one.
            if len(consumers) > 1 and self._commit_together(consumers, batch, now):
                done, commits = consumers, commits + 1
            else:
                done = self._commit_each(consumers, batch, now)
                commits += len(done)
            for consumer in done:
                self._feeds[consumer.name].committed(batch.window)
                if not batch.window.empty:
                    self._moved_at[consumer.name] = self._monotonic()
            handed += len(batch.runs) * len(done)
            failed = failed or len(done) < len(consumers)
        self.behind = behind
        # Our own watermark moves are snapshots too: remember where they left the store, so
        # that the next step, woken by them, finds nothing and writes nothing.
        if failed:
            self._settled = -1  # the failed consumer's runs wait: step again
        elif commits:
            after = current_snapshot(self._store)
            # Settled only if every snapshot since `current` is one of our commits: another
            # writer's (the deriver's runs) landing meanwhile must be read next step.
            self._settled = after if after <= current + commits else -1
        return handed

    def _commit_together(self, consumers: list[RunConsumer], batch: _Batch, now: int) -> bool:
        """All of `consumers` in one transaction; False if it failed (nothing was committed)."""

        def commit(cur: duckdb.DuckDBPyConnection) -> None:
            move_feeds(cur, [self._feeds[c.name] for c in consumers], batch.window)
            for consumer in consumers:
                consumer.consume(cur, batch.runs, now)

        try:
            self._store.call(commit)
        except StoreUnavailable:
            for consumer in consumers:
                self._feeds[consumer.name].forget()
            raise
        except Exception:
            # Which consumer failed is found by committing each alone (and logged there).
            log.debug("run consumers failed in one transaction; committing each alone")
            return False
        return True

    def _commit_each(
        self, consumers: list[RunConsumer], batch: _Batch, now: int
    ) -> list[RunConsumer]:
        """Each consumer in a transaction of its own; returns those that committed."""
        done = []
        for consumer in consumers:
            feed = self._feeds[consumer.name]
            commit = functools.partial(
                self._commit, consumer=consumer, feed=feed, batch=batch, now=now
            )
            try:
                self._store.call(commit)
            except StoreUnavailable:
                feed.forget()
                raise
            except Exception:
                feed.forget()  # read it again next step
                log.exception("run consumer %s failed; retrying next step", consumer.name)
                continue
            done.append(consumer)
        return done

    def _read(self, feed: Feed, window: Window, last_move: float) -> _Batch:
        if window.empty:
            return _Batch(window, [])
        # No run changed: the snapshots since are other writes (ingest, our own watermark
        # moves). Moving past them each step would write a snapshot a step forever, so an idle
        # watermark moves only every `idle_move_s`, enough to let snapshot expiry go on.
        idle = not window.behind and self._monotonic() - last_move < self._idle_move_s
        if feed.is_quiet(window):  # read last step and no run changed in them
            return _Batch(window.hold() if idle else window, [], quiet=True)
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
                [window.since + 1, window.until],
            ).to_arrow_table(ARROW_BATCH_ROWS)
        finally:
            cur.close()
        if table.num_rows == 0:
            return _Batch(window.hold() if idle else window, [], quiet=True)
        runs = [r for r in table_rows(table) if r["status"] != "running"]
        return _Batch(window, runs)

    def _commit(
        self,
        cur: duckdb.DuckDBPyConnection,
        consumer: RunConsumer,
        feed: Feed,
        batch: _Batch,
        now: int,
    ) -> None:
        feed.move(cur, batch.window)
        consumer.consume(cur, batch.runs, now)

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
        """Step on every commit (at once while behind), and at least every `interval_s` for
        time-based work (alert windows), until `stop` is set."""
        if not self._consumers:
            return

        def step() -> bool:
            self.step()
            return self.behind

        wake = self._store.commits.event()
        await run_steps(
            step,
            stop,
            self._interval_s,
            "run consumers",
            after=self.after_commit,
            wake=wake,
            min_gap_s=self._min_gap_s,
        )


def table_rows(table: Any) -> list[dict[str, Any]]:
    """An Arrow table as a list of row dicts."""
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def _one(cur: duckdb.DuckDBPyConnection, sql: str) -> Any:
    found = cur.execute(sql).fetchone()
    return None if found is None else found[0]
