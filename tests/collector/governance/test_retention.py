"""Tests for `collector/governance/retention.py` (and the reclaiming half of
`collector/governance/compaction.py`): a real DuckLake store with rows of every kind, old and new,
for two orgs; exactly the expired rows go, per kind and org, the disk shrinks, and the run deriver
still sees every change afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from collector.governance import compaction, retention
from collector.governance.retention import RetentionConfig
from collector.mcp import store as mcp_store
from collector.model import Rows, Signal
from collector.roi import store as roi_store
from collector.runs.derive import WATERMARK, RunDeriver
from collector.store.schema import to_table
from collector.store.writer import Store
from processors.runs.assemble import RunsConfig, RunsProcessor
from tests.stores import service_store

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OLD, NEW = NOW - timedelta(days=40), NOW - timedelta(days=1)


def ns(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with service_store(tmp_path) as s:
        roi_store.create_tables(s)
        s.call(mcp_store.create_tables)
        retention.create_tables(s)
        yield s


def spans(org: str, at: datetime, n: int, tag: str, pad: int = 0) -> list[dict[str, Any]]:
    """`n` traces of an agent span with an LLM and a tool call beneath, starting at `at`."""
    rows = []
    for t in range(n):
        trace = f"{tag}{t:0{32 - len(tag)}x}"
        for i, kind in enumerate(("agent", "llm", "tool")):
            rows.append(
                {
                    "org": org,
                    "trace_id": trace,
                    "span_id": f"{i + 1:016x}",
                    "parent_span_id": None if i == 0 else f"{1:016x}",
                    "name": kind,
                    "start_time_unix_nano": ns(at) + i,
                    "end_time_unix_nano": ns(at) + 1000,
                    "span_type": kind,
                    "agent_name": "triage" if kind == "agent" else None,
                    "links": "[]",
                    "attributes": json.dumps({"pad": os.urandom(pad).hex()}),
                    "received_at": at,
                    "usage_is_aggregate": False,
                    "is_error": False,
                }
            )
    return rows


def append_spans(store: Store, rows: list[dict[str, Any]]) -> None:
    columns = {k: [r.get(k) for r in rows] for k in {k for r in rows for k in r}}
    table = to_table(Signal.TRACES, columns, len(rows))  # type: ignore[arg-type]
    asyncio.run(store.append(Rows(Signal.TRACES, rows[0]["org"], table)))


def append_native(store: Store, table: str, schema: pa.Schema, rows: list[dict[str, Any]]) -> None:
    full = [{n: r.get(n) for n in schema.names} for r in rows]
    batch = pa.Table.from_pylist(full, schema)
    asyncio.run(store.append(Rows(None, rows[0]["org"], batch, target=table)))


def fill(store: Store) -> None:
    for org, tag in (("acme", "a"), ("globex", "c")):
        append_spans(store, spans(org, OLD, 4, f"{tag}0"))
        append_spans(store, spans(org, NEW, 2, f"{tag}1"))
        for at, n in ((OLD, 3), (NEW, 2)):
            events = [
                {"org": org, "event_id": f"evt{org}{at.day}{i}", "occurred_at": at}
                for i in range(n)
            ]
            append_native(store, roi_store.TABLE, roi_store.SCHEMA, events)
            calls = [
                {"org": org, "event_id": f"mcp{org}{at.day}{i}", "received_at": at, "seq": i}
                for i in range(n)
            ]
            append_native(store, "mcp_events", mcp_store.SCHEMAS["mcp_events"], calls)


def counts(store: Store) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for kind, sql in (
        ("spans", "SELECT org, count(*) FROM spans WHERE span_type = 'agent' GROUP BY org"),
        ("llm", "SELECT org, count(*) FROM spans WHERE span_type = 'llm' GROUP BY org"),
        ("tool", "SELECT org, count(*) FROM spans WHERE span_type = 'tool' GROUP BY org"),
        ("roi", "SELECT org, count(*) FROM roi_events GROUP BY org"),
        ("mcp", "SELECT org, count(*) FROM mcp_events GROUP BY org"),
    ):
        for org, n in store.query(sql):
            out[(kind, org)] = int(n)
    return out


def data_bytes(store: Store) -> int:
    total = 0
    for root, _, files in os.walk(store.settings.data_path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def test_deletes_exactly_the_expired_rows_per_kind_and_org(store: Store) -> None:
    fill(store)
    assert counts(store)[("llm", "acme")] == 6
    config = RetentionConfig(
        defaults={"spans": 30, "llm_calls": 30, "tool_calls": 60, "roi_events": 30},
        orgs={"acme": {"capture_events": 7}},
    )
    # globex keeps its LLM calls forever (set through the admin API), acme its ROI for 90 days.
    retention.set_overrides(store, "globex", {"llm_calls": 0})
    retention.set_overrides(store, "acme", {"roi_events": 90})
    result = retention.apply(store, config, NOW)
    assert counts(store) == {
        ("spans", "acme"): 2,
        ("spans", "globex"): 2,
        ("llm", "acme"): 2,
        ("llm", "globex"): 6,
        ("tool", "acme"): 6,  # 40 days old, TTL 60
        ("tool", "globex"): 6,
        ("roi", "acme"): 5,
        ("roi", "globex"): 2,
        ("mcp", "acme"): 2,  # the config's acme override
        ("mcp", "globex"): 5,  # no default: kept forever
    }
    assert result.deleted == {
        "spans": 8,
        "llm_calls": 4,
        "tool_calls": 0,
        "runs": 0,
        "roi_events": 3,
        "capture_events": 3,
        "otlp_logs": 0,
        "metrics": 0,
    }  # logs and alert events: their tables do not exist yet, so they are skipped
    # A second pass finds nothing more; clearing globex's override brings back the default.
    assert sum(retention.apply(store, config, NOW).deleted.values()) == 0
    retention.set_overrides(store, "globex", {"llm_calls": None})
    assert retention.apply(store, config, NOW).deleted["llm_calls"] == 4


def test_effective_ttls_name_their_source(store: Store) -> None:
    config = RetentionConfig(defaults={"spans": 30}, orgs={"acme": {"runs": 90}})
    retention.set_overrides(store, "acme", {"spans": 3})
    ttl = retention.effective(config, retention.stored_overrides(store), "acme")
    assert ttl["spans"] == {"ttl_days": 3.0, "source": "org"}
    assert ttl["runs"] == {"ttl_days": 90, "source": "config_org"}
    assert ttl["metrics"] == {"ttl_days": 0.0, "source": "default"}


def test_config_rejects_unknown_kinds_and_negative_ttls() -> None:
    issues = RetentionConfig(defaults={"spanz": 3, "runs": -1}).validate()
    assert [i.path for i in issues] == ["defaults.spanz", "defaults.runs"]


def test_disk_shrinks_after_the_job(store: Store) -> None:
    for i in range(6):  # one Parquet file per commit
        append_spans(store, spans("acme", OLD, 200, f"a{i}", pad=2000))
    append_spans(store, spans("acme", NEW, 5, "b"))
    before = data_bytes(store)
    retention.apply(store, RetentionConfig(defaults={k: 30 for k in retention.KINDS}), NOW)
    assert data_bytes(store) >= before  # deleted rows stay on disk while snapshots refer to them
    reclaimed = compaction.reclaim(store, required=(), grace_s=0)
    assert reclaimed.expired > 0 and reclaimed.removed_files >= 6
    after = data_bytes(store)
    assert after < before / 20
    assert store.query("SELECT count(*) FROM spans")[0][0] == 15


def test_never_expires_a_snapshot_a_consumer_still_reads(store: Store) -> None:
    derive = RunDeriver(store, RunsProcessor(RunsConfig()), clock=lambda: ns(NOW))
    append_spans(store, spans("acme", OLD, 3, "a0"))
    assert derive.step() == 3
    mark = store.query("SELECT snapshot_id FROM watermarks WHERE name = ?", [WATERMARK])[0][0]
    # New spans arrive; before the deriver sees them, retention and maintenance run.
    append_spans(store, spans("acme", NEW, 2, "b0"))
    retention.apply(store, RetentionConfig(defaults={"llm_calls": 30}), NOW)
    compaction.compact(store, compaction.CompactionConfig())
    reclaimed = compaction.reclaim(store, required=(WATERMARK,), grace_s=0)
    assert reclaimed.safe_snapshot == mark
    oldest = store.query("SELECT min(snapshot_id) FROM lake.snapshots()")[0][0]
    assert oldest == mark + 1  # everything the deriver still has to read is there
    # Only the 2 new traces: the runs whose LLM spans expired keep their totals (own TTL).
    assert derive.step() == 2
    assert store.query("SELECT count(*) FROM runs WHERE trace_id LIKE 'b0%'")[0][0] == 2


def test_a_required_consumer_without_a_watermark_blocks_expiry(store: Store) -> None:
    append_spans(store, spans("acme", NEW, 1, "a"))
    append_spans(store, spans("acme", NEW, 1, "b"))
    before = store.query("SELECT count(*) FROM lake.snapshots()")[0][0]
    assert compaction.reclaim(store, required=(WATERMARK,), grace_s=0).expired == 0
    assert store.query("SELECT count(*) FROM lake.snapshots()")[0][0] == before
