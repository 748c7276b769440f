"""Watermark benchmark: what moving the change-feed consumers' watermarks costs on the lake.

In a temporary store, moves the watermarks of three consumers that read the same window (the
run follower's alerts, ROI and output rules) as three transactions (each consumer alone, as
`Feed.move`) and as one (`move_feeds`, what the follower does), alternately; then keeps moving
one other watermark with the server's compaction and snapshot expiry between, and times both
again, to show how a move's cost grows with the lake's history.

    python bench/watermarks.py --rounds 100 --history 3000
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.read_api import machine  # noqa: E402
from collector.governance.compaction import CompactionConfig, compact, reclaim  # noqa: E402
from collector.runs.feed import Feed, Window, move_feeds  # noqa: E402
from collector.store.lake import StoreSettings  # noqa: E402
from collector.store.writer import Store  # noqa: E402

NAMES = ("alerts", "roi", "output_rules")


class Positions:
    """The three feeds and where their watermarks stand."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.feeds = [Feed(store, n, max_snapshots=1 << 40) for n in NAMES]
        self.at = -1

    def next_window(self) -> Window:
        return Window(self.at, self.at + 1, self.at + 1)

    def apart(self) -> None:
        window = self.next_window()
        for feed in self.feeds:
            self.store.call(functools.partial(feed.move, window=window))
        self.at = window.until

    def together(self) -> None:
        window = self.next_window()
        self.store.call(lambda cur: move_feeds(cur, self.feeds, window))
        self.at = window.until


def timed(fn: Callable[[], None], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def measure(positions: Positions, rounds: int, label: str) -> None:
    apart: list[float] = []
    together: list[float] = []
    for _ in range(rounds // 10):  # alternately, so both meet the same host load
        apart += timed(positions.apart, 10)
        together += timed(positions.together, 10)
    a, t = statistics.median(apart), statistics.median(together)
    print(
        f"{label}: three consumers moved apart {a:.1f} ms p50, together {t:.1f} ms p50 "
        f"({a / t:.1f}x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--history", type=int, default=3000, help="moves of another watermark")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="al-watermarks-") as tmp:
        settings = StoreSettings(catalog=f"{tmp}/catalog.ducklake", data_path=f"{tmp}/files/")
        store = Store(settings)
        store.open()
        try:
            positions = Positions(store)
            positions.together()  # the first move stores the three rows
            measure(positions, args.rounds, "fresh store")
            deriver = Feed(store, "runs", max_snapshots=1 << 40)
            config = CompactionConfig()
            for i in range(args.history):
                window = Window(i - 1, i, i)
                store.call(functools.partial(deriver.move, window=window))
                if i % 200 == 199:  # the server's maintenance, as often as under load
                    compact(store, config)
                    reclaim(store, [], 0)
            measure(positions, args.rounds, f"after {args.history:,} other moves")
        finally:
            store.close()


if __name__ == "__main__":
    main()
