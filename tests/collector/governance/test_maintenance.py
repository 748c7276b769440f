"""Tests for `collector/governance/maintenance.py`: compaction starts as soon as the small files
pass their bound, not only on its schedule, on a real DuckLake store; DuckDB's memory is on
/metrics.
"""

from __future__ import annotations

import asyncio

from collector.governance import compaction
from collector.governance.compaction import CompactionConfig
from collector.governance.maintenance import Maintenance
from collector.governance.retention import RetentionConfig
from collector.store.config import StorageConfig
from collector.store.writer import Store
from collector.telemetry import Metrics
from tests.collector.governance.test_compaction import live_files
from tests.collector.governance.test_retention import NOW, append_spans, spans, store

__all__ = ["store"]  # the fixture, shared with test_retention

# A schedule that never comes within a test: only the file count can start a run.
BOUNDED = CompactionConfig(interval_s=3600, max_small_files=6, check_interval_s=0.05)


def maintenance(store: Store, config: CompactionConfig = BOUNDED) -> Maintenance:
    m = Maintenance(
        store, Metrics(), retention=RetentionConfig(), compaction=config, storage=StorageConfig()
    )
    m.prepare()
    return m


def commits(store: Store, n: int, tag: str) -> None:
    for i in range(n):
        append_spans(store, spans("acme", NOW, 5, f"{tag}{i:02x}"))


def test_compaction_waits_until_the_small_files_pass_their_bound(store: Store) -> None:
    m = maintenance(store)
    commits(store, 5, "a")
    m.compact_if_many()
    assert live_files(store, "spans") == 5
    commits(store, 1, "b")
    m.compact_if_many()
    assert live_files(store, "spans") == 1
    assert compaction.small_files(store, BOUNDED) <= 1


def test_the_running_service_compacts_once_the_bound_is_passed(store: Store) -> None:
    m = maintenance(store)
    commits(store, 8, "c")

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(m.run_forever(stop))
        try:
            for _ in range(600):  # up to a minute on a busy machine; done within a second here
                if await asyncio.to_thread(live_files, store, "spans") == 1:
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await task

    asyncio.run(run())
    assert live_files(store, "spans") == 1
    assert m._metrics.value("agentledger_compaction_merges_total") >= 1


def test_duckdb_memory_is_on_metrics(store: Store) -> None:
    m = maintenance(store)
    text = m._metrics.render()
    found = {
        ln.split(" ")[0]: float(ln.split(" ")[1])
        for ln in text.splitlines()
        if ln.startswith(("agentledger_store_memory_bytes", "agentledger_store_spilled_bytes"))
    }
    assert set(found) == {"agentledger_store_memory_bytes", "agentledger_store_spilled_bytes"}
    assert found["agentledger_store_memory_bytes"] > 0  # the catalog's tables, at least
    assert found["agentledger_store_spilled_bytes"] >= 0
