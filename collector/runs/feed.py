"""The one change-feed step loop: a consumer's watermark over the store's snapshots, the bounded
window of snapshots a step reads, the move of the watermark inside the step's own transaction,
and the loop that runs steps. The run deriver and every run follower consumer step through it.

Positions live in the store's `watermarks` table (`collector/store/watermarks.py`); a step reads
DuckLake's change feed between `since` and `until`, writes its results and moves the watermark in
one transaction, so a crash anywhere redoes that step, and a step of a second stepper that read
the same `since` fails instead of committing its work twice. On a shared store that transaction
also carries the job's lease fence (`collector/cluster/fence.py`, applied by the writer): a node
that lost the lease commits nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import duckdb

from collector.cluster.fence import LeaseLost
from collector.model import StoreUnavailable
from collector.store.conflict import is_fenced
from collector.store.lake import LAKE
from collector.store.watermarks import (
    read_watermark,
    read_watermarks,
    stored_watermark,
    write_watermark,
    write_watermarks,
)
from collector.store.writer import Store

log = logging.getLogger(__name__)


class WatermarkMoved(Exception):
    """Another stepper moved this watermark after the step read it: the step is dropped."""


@dataclass(frozen=True)
class Window:
    """The snapshots one step covers: after `since` up to and including `until`; `current` is
    the newest snapshot when the window was taken."""

    since: int
    until: int
    current: int

    @property
    def empty(self) -> bool:
        return self.until == self.since

    @property
    def behind(self) -> bool:
        """More snapshots wait beyond this window."""
        return self.until < self.current

    def shrink(self, until: int) -> Window:
        """The same window ending earlier (a step that stops at a work bound)."""
        return Window(self.since, until, self.current)

    def hold(self) -> Window:
        """The window that leaves the watermark where it is."""
        return Window(self.since, self.since, self.current)


def current_snapshot(store: Store) -> int:
    return int(store.query(f"SELECT id FROM {LAKE}.current_snapshot()")[0][0])


class Feed:
    """One watermark's position in the change feeds, as the last commit of this process left it.

    The position is read from the store once and then kept in memory (the commit re-reads it in
    its transaction and fails with `WatermarkMoved` if it was moved meanwhile). A window read
    before with nothing in it for this consumer is remembered (`quiet`): snapshots never change,
    so reading them again would find nothing again.
    """

    def __init__(self, store: Store, name: str, *, max_snapshots: int) -> None:
        self.name = name
        self._store = store
        self._max_snapshots = max_snapshots
        self._mark: int | None = None
        self._quiet: tuple[int, int] | None = None

    def position(self) -> int:
        """The snapshot read up to; -1 before the first step."""
        if self._mark is None:
            self._mark = stored_watermark(self._store, self.name)
        return self._mark

    def window(self, current: int | None = None) -> Window:
        """The next bounded window after the position (empty when caught up)."""
        since = self.position()
        now = current_snapshot(self._store) if current is None else current
        return Window(since, max(since, min(now, since + self._max_snapshots)), now)

    def is_quiet(self, window: Window) -> bool:
        """Whether exactly this window was read before and held nothing for this consumer."""
        return self._quiet == (window.since, window.until)

    def remember(self, window: Window, *, quiet: bool) -> None:
        self._quiet = (window.since, window.until) if quiet else None

    def move(self, cur: duckdb.DuckDBPyConnection, window: Window) -> None:
        """In the step's transaction: check nobody moved the watermark since `window.since` was
        read, then move it to `window.until` (not at all for an empty window). On a shared
        store the writer has stamped the transaction with the job's fence: the commit is refused
        if this node's lease on the job moved meanwhile."""
        move_feeds(cur, [self], window)

    def committed(self, window: Window) -> None:
        """After the step's transaction committed."""
        self._mark = window.until

    def forget(self) -> None:
        """After a failed step: read the position from the store again next time."""
        self._mark = None

    def start_at(self, cur: duckdb.DuckDBPyConnection, snapshot: int) -> None:
        """Give a consumer seen for the first time its start (idempotent)."""
        if read_watermark(cur, self.name) is None:
            write_watermark(cur, self.name, snapshot)


def move_feeds(cur: duckdb.DuckDBPyConnection, feeds: Sequence[Feed], window: Window) -> None:
    """`Feed.move` of several feeds that read the same window, in one transaction and three
    statements however many they are: the consumers of one batch commit together
    (`follow.py`)."""
    names = [f.name for f in feeds]
    stored = read_watermarks(cur, names)
    moved = {n: stored.get(n) for n in names if stored.get(n, -1) != window.since}
    if moved:
        raise WatermarkMoved(f"watermarks {moved} moved since the step read {window.since}")
    if not window.empty:
        write_watermarks(cur, names, window.until)


Step = Callable[[], bool]
"""One blocking step; returns True while it is behind (more is waiting: step again at once)."""


async def run_steps(
    step: Step,
    stop: asyncio.Event,
    interval_s: float,
    what: str,
    *,
    after: Callable[[], Awaitable[None]] | None = None,
    wake: asyncio.Event | None = None,
    min_gap_s: float = 0.0,
) -> None:
    """Run `step` in a thread every `interval_s` (at once while it is behind, and as soon as
    `wake` is set: a commit landed, but no sooner than `min_gap_s` after the last step began)
    until `stop` is set; `after` runs on the event loop after each step. A failed step
    committed nothing, so it is logged and retried next interval; a closed store pauses the
    loop the same way. A step refused by its lease's fence ends the loop (`LeaseLost`):
    another node steps now."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        behind = False
        began = loop.time()
        if wake is not None:
            wake.clear()  # a commit from now on wakes the next wait
        try:
            behind = await asyncio.to_thread(step)
        except StoreUnavailable:
            log.warning("%s paused: the store is unavailable", what)
        except Exception as e:
            if is_fenced(e):
                raise LeaseLost(f"{what}: the lease moved to another node") from e
            log.exception("%s step failed; retrying", what)
        if after is not None:
            await after()
        if behind:
            await asyncio.sleep(0)
            continue
        await _sleep(stop, interval_s, wake)
        # Commits land every few milliseconds under load: steps that wait for a few of them
        # take more at once, for less work a span.
        # A loop (not an if): the event loop's timers may fire a little early.
        while (rest := began + min_gap_s - loop.time()) > 0 and not stop.is_set():
            await _sleep(stop, rest, None)


async def _sleep(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None) -> None:
    """Until `stop` or `wake` is set, or `seconds` pass."""
    waits = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
