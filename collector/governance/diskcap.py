"""The disk cap: `storage.max_size_mib` with `storage.on_full` — refuse new data (a retryable
503 / UNAVAILABLE) or drop the oldest data first, across kinds, until the store fits again.

`collector/governance/maintenance.py` calls `check()` on a schedule (it measures the data dir); the
store calls `admit()` before queueing every append, so every receiver answers a full store the same
way.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from collector.governance import compaction, retention
from collector.model import Rows, StoreUnavailable
from collector.store.lake import LAKE, StoreSettings
from collector.store.writer import Store
from collector.telemetry import Metrics

log = logging.getLogger(__name__)
OnFull = Literal["drop_oldest", "refuse"]
_META = f"__ducklake_metadata_{LAKE}"
_LOW_WATER = 0.9  # drop down to 90% of the cap, so one drop lasts a while


class StoreFull(StoreUnavailable):
    """The store is over its size cap in `refuse` mode: retry later, nothing was stored."""


def store_bytes(settings: StoreSettings) -> int:
    """Bytes of the catalog (with its WAL) and of every file under the data path."""
    total = 0
    catalog = Path(settings.catalog)
    for path in (catalog, catalog.with_name(catalog.name + ".wal")):
        if path.exists():
            total += path.stat().st_size
    for root, _, files in os.walk(settings.data_path):
        for name in files:
            with contextlib.suppress(OSError):  # removed by compaction meanwhile
                total += os.stat(os.path.join(root, name)).st_size
    return total


@dataclass
class CapState:
    size_bytes: int = 0
    full: bool = False
    refusals: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    waiting_for: int | None = None  # a drop's snapshot, until consumers pass it


class DiskCap:
    def __init__(
        self,
        store: Store,
        max_bytes: int | None,
        mode: OnFull,
        metrics: Metrics,
        *,
        required: tuple[str, ...] = (),
        grace_s: float = 0.0,
    ) -> None:
        self._store = store
        self.max_bytes = max_bytes
        self.mode = mode
        self._required = required
        self._grace_s = grace_s
        self.state = CapState()
        metrics.gauge(
            "agentledger_store_cap_bytes",
            "storage.max_size_mib in bytes (0: no cap)",
            lambda: float(max_bytes or 0),
        )
        metrics.gauge(
            "agentledger_store_measured_bytes",
            "store size as last measured by the disk cap",
            lambda: float(self.state.size_bytes),
        )
        metrics.gauge(
            "agentledger_store_full", "1 while new data is refused", lambda: float(self.state.full)
        )
        metrics.counter(
            "agentledger_store_full_refusals_total",
            "appends refused because the store is full",
            lambda: float(self.state.refusals),
        )
        metrics.collector(self._render)

    def _measure(self) -> int:
        """The store's size: walked on disk, or as the catalog records it for a shared store
        or data in object storage."""
        settings = self._store.settings
        if settings.shared or settings.remote_data:
            return self._store.catalog_bytes()
        return store_bytes(settings)

    def _render(self) -> list[str]:
        name = "agentledger_store_dropped_rows_total"
        lines = [
            "# HELP agentledger_store_cap_mode storage.on_full (the mode label is 1)",
            "# TYPE agentledger_store_cap_mode gauge",
            f'agentledger_store_cap_mode{{mode="{self.mode}"}} {int(self.max_bytes is not None)}',
            f"# HELP {name} rows deleted to stay under the size cap",
            f"# TYPE {name} counter",
        ]
        lines += [f'{name}{{kind="{k}"}} {v}' for k, v in sorted(self.state.dropped.items())]
        return lines

    def admit(self, rows: Rows) -> None:
        """Called by the store before queueing an append; raises StoreFull when refusing."""
        if self.state.full:
            self.state.refusals += 1
            raise StoreFull(f"the store is over its size cap ({self.max_bytes} bytes); retry later")

    def check(self) -> None:
        """Measure the store; refuse or drop as configured (blocking: run it in a thread)."""
        if self.max_bytes is None:
            return
        size = self.state.size_bytes = self._measure()
        over = size > self.max_bytes
        if self.mode == "refuse":
            if over != self.state.full:
                log.warning(
                    "store size %d bytes is %s the cap of %d: %s new data",
                    size,
                    "over" if over else "back under",
                    self.max_bytes,
                    "refusing" if over else "accepting",
                )
            self.state.full = over
            return
        if self.state.waiting_for is not None:
            # The last drop's files go once every change-feed consumer has read past it.
            done = compaction.reclaim(self._store, self._required, self._grace_s)
            if done.safe_snapshot < self.state.waiting_for:
                return
            self.state.waiting_for = None
            size = self.state.size_bytes = self._measure()
            over = size > self.max_bytes
        if over:
            self.drop_oldest(size)

    def drop_oldest(self, size: int) -> None:
        """Delete the oldest rows of every kind (one time cutoff across kinds) worth about the
        excess over 90% of the cap, estimated from the catalog's bytes per row of each table."""
        assert self.max_bytes is not None
        excess = size - int(self.max_bytes * _LOW_WATER)
        cutoff = self._cutoff(excess)
        if cutoff is None:
            log.warning("store over its size cap with nothing left to drop")
            return
        dropped = {}
        tables = retention.existing_tables(self._store)
        for kind, targets in retention.KINDS.items():
            n = sum(
                retention.delete_older(self._store, t, cutoff) for t in targets if t.table in tables
            )
            if n:
                dropped[kind] = n
                self.state.dropped[kind] = self.state.dropped.get(kind, 0) + n
        log.warning(
            "store size %d bytes over the cap of %d: dropped data older than %s (%s)",
            size,
            self.max_bytes,
            cutoff.isoformat(),
            ", ".join(f"{k} {v}" for k, v in dropped.items()) or "nothing",
        )
        self.state.waiting_for = int(
            self._store.query(f"SELECT id FROM {LAKE}.current_snapshot()")[0][0]
        )
        compaction.reclaim(self._store, self._required, self._grace_s)

    def _cutoff(self, excess: int) -> datetime | None:
        per_row = {
            str(t): float(b) / max(int(n), 1)
            for t, b, n in self._store.query(
                f"""SELECT t.table_name, sum(f.file_size_bytes), sum(f.record_count)
                    FROM {_META}.ducklake_data_file f JOIN {_META}.ducklake_table t
                      ON f.table_id = t.table_id AND t.end_snapshot IS NULL
                    WHERE f.end_snapshot IS NULL GROUP BY ALL"""
            )
        }
        tables = retention.existing_tables(self._store)
        targets = [t for ts in retention.KINDS.values() for t in ts if t.table in tables]

        def freed(at: datetime) -> float:
            total = 0.0
            for t in targets:
                rows = self._store.query(
                    f"SELECT count(*) FROM {t.table} WHERE {t.where} AND {t.time} < ?",
                    [retention.cutoff_value(t, at)],
                )
                total += int(rows[0][0]) * per_row.get(t.table, 0.0)
            return total

        lo = self._oldest(targets)
        if lo is None:
            return None
        hi = datetime.now(UTC) + timedelta(seconds=1)
        for _ in range(14):  # binary search on time: the first cutoff freeing enough
            mid = lo + (hi - lo) / 2
            if freed(mid) >= excess:
                hi = mid
            else:
                lo = mid
        return hi

    def _oldest(self, targets: list[retention.Target]) -> datetime | None:
        oldest: datetime | None = None
        for t in targets:
            sql = f"SELECT min({t.time}) FROM {t.table} WHERE {t.where}"
            found = self._store.query(sql)[0][0]
            if found is None:
                continue
            at = datetime.fromtimestamp(int(found) / 1e9, UTC) if t.unit == "ns" else found
            oldest = at if oldest is None or at < oldest else oldest
        return oldest
