"""The scheduled store jobs of a running service: retention, compaction, reclaiming expired
snapshots' files, and the disk cap; plus their admin routes (`/api/retention`, `/api/export`).

`collector/service.py` builds one `Maintenance` from the config and the store, calls `prepare()`
once the tables exist, and runs `run_forever` until shutdown; each job runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute

from collector.api.routes import Operation, routes
from collector.auth.keys import Authenticator
from collector.governance import compaction, retention
from collector.governance.compaction import CompactionConfig
from collector.governance.diskcap import DiskCap
from collector.governance.export import ExportApi
from collector.governance.retention import RetentionConfig
from collector.governance.retention_api import RetentionApi
from collector.model import StoreUnavailable
from collector.store import readercopy
from collector.store.config import StorageConfig
from collector.store.writer import Store
from collector.telemetry import Metrics

log = logging.getLogger(__name__)
MIB = 1024 * 1024


class Maintenance:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        retention: RetentionConfig,
        compaction: CompactionConfig,
        storage: StorageConfig,
        required: Sequence[str] = (),
    ) -> None:
        """`storage` gives the disk cap and reader-copy settings; `required` names the
        watermarks snapshot expiry must wait for."""
        self._store = store
        self._metrics = metrics
        self.retention = retention
        self.compaction = compaction
        self._required = tuple(required)
        self._stopping = threading.Event()  # seen by a job's thread: stop at the next slice
        s = storage
        self._cap_interval_s = float(s.size_check_interval_s)
        self._reader_copy_s = float(s.reader_copy_interval_s)
        self.cap = DiskCap(
            store,
            s.max_size_mib * MIB if s.max_size_mib is not None else None,
            s.on_full,
            metrics,
            required=self._required,
            grace_s=float(self.retention.cleanup_grace_s),
        )
        for name, text in (
            ("agentledger_retention_deleted_rows_total", "rows deleted past their TTL"),
            ("agentledger_compaction_merges_total", "merged output files written"),
            ("agentledger_compaction_conflicts_total", "merges retried after a concurrent delete"),
            ("agentledger_snapshots_expired_total", "store snapshots expired"),
            ("agentledger_files_removed_total", "data files removed from disk"),
        ):
            metrics.describe(name, "counter", text)
        metrics.gauge(
            "agentledger_store_memory_bytes",
            "memory DuckDB holds in this process (queries, merges), up to storage.memory_limit_mib",
            lambda: self._duckdb_memory()[0],
        )
        metrics.gauge(
            "agentledger_store_spilled_bytes",
            "what DuckDB has spilled to its temp folder past its memory limit",
            lambda: self._duckdb_memory()[1],
        )

    def _duckdb_memory(self) -> tuple[float, float]:
        try:
            found = self._store.query(
                "SELECT sum(memory_usage_bytes), sum(temporary_storage_bytes) FROM duckdb_memory()"
            )
        except StoreUnavailable:
            return math.nan, math.nan
        return float(found[0][0] or 0), float(found[0][1] or 0)

    def prepare(self) -> None:
        """Create the settings table, set the table layout, and gate appends on the cap."""
        retention.create_tables(self._store)
        if self.compaction.enabled:
            compaction.prepare(self._store, self.compaction)
        self._store.admit = self.cap.admit
        log.info(
            "disk cap: %s",
            f"{self.cap.max_bytes} bytes, on full: {self.cap.mode}"
            if self.cap.max_bytes is not None
            else "none",
        )

    def routes(self, auth: Authenticator) -> list[BaseRoute]:
        return routes(self.operations(auth))

    def operations(self, auth: Authenticator) -> list[Operation]:
        return [
            *RetentionApi(self._store, auth, self.retention).operations(),
            *ExportApi(self._store, auth).operations(),
        ]

    # -- the jobs ----------------------------------------------------------------------------

    def run_retention(self) -> None:
        result = retention.apply(self._store, self.retention)
        for kind, n in result.deleted.items():
            if n:
                self._metrics.inc("agentledger_retention_deleted_rows_total", n, kind=kind)
        self.reclaim()

    def run_compaction(self) -> None:
        result = compaction.compact(self._store, self.compaction, self._stopping.is_set)
        self._metrics.inc("agentledger_compaction_merges_total", sum(result.merged.values()))
        self._metrics.inc("agentledger_compaction_conflicts_total", result.conflicts)
        self.reclaim()

    def compact_if_many(self) -> None:
        """Compact now if the small files have passed their bound, so that under load each
        merge stays small and the file count bounded instead of growing until `interval_s`."""
        if compaction.small_files(self._store, self.compaction) >= self.compaction.max_small_files:
            self.run_compaction()

    def publish_reader_copy(self) -> None:
        path = readercopy.publish(self._store)
        log.debug("published the reader copy of the catalog at %s", path)

    def reclaim(self) -> None:
        result = compaction.reclaim(self._store, self._required, self.retention.cleanup_grace_s)
        self._metrics.inc("agentledger_snapshots_expired_total", result.expired)
        self._metrics.inc("agentledger_files_removed_total", result.removed_files)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Run each job when it is due until `stop` is set. A failing job is logged and tried
        again at its next turn: every job commits in small transactions, so it can stop anywhere."""
        jobs: list[tuple[str, float, Callable[[], Any]]] = [
            ("retention", float(self.retention.interval_s), self.run_retention),
            ("disk cap", self._cap_interval_s, self.cap.check),
        ]
        if self.compaction.enabled:
            jobs.append(("compaction", float(self.compaction.interval_s), self.run_compaction))
            check = float(self.compaction.check_interval_s)
            jobs.append(("compaction trigger", check, self.compact_if_many))
        if self._reader_copy_s > 0:
            jobs.append(("reader copy", self._reader_copy_s, self.publish_reader_copy))
        grace = float(self.retention.cleanup_grace_s)
        if grace > 0:  # files of snapshots expired by a job are removed one grace period later
            jobs.append(("file cleanup", max(grace, 1.0), self.reclaim))
        due = {name: time.monotonic() + (0 if name in ("disk cap", "reader copy") else interval)
               for name, interval, _ in jobs}  # fmt: skip
        self._stopping.clear()
        watcher = asyncio.create_task(_set_when(stop, self._stopping))
        try:
            await self._loop(jobs, due, stop)
        finally:
            watcher.cancel()

    async def _loop(
        self,
        jobs: list[tuple[str, float, Callable[[], Any]]],
        due: dict[str, float],
        stop: asyncio.Event,
    ) -> None:
        while not stop.is_set():
            for name, interval, job in jobs:
                if time.monotonic() < due[name] or stop.is_set():
                    continue
                try:
                    await asyncio.to_thread(job)
                except StoreUnavailable:
                    log.warning("%s paused: the store is unavailable", name)
                except Exception:
                    log.exception("%s failed; retrying at its next turn", name)
                due[name] = time.monotonic() + interval
            wait = max(0.05, min(due.values()) - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)


async def _set_when(stop: asyncio.Event, flag: threading.Event) -> None:
    await stop.wait()
    flag.set()
