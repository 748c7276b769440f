"""Tests for `collector/governance/compaction.py`: small files of many commits merged while ingest
commits and queries run concurrently on a real DuckLake store — no row lost or doubled, runs derived
from the change feed still match a derivation from scratch, and the inlined rows end up in Parquet.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector.governance import compaction, retention
from collector.governance.compaction import MIB, CompactionConfig
from collector.roi import store as roi_store
from collector.runs.derive import RunDeriver
from collector.store.writer import Store
from processors.runs.assemble import RunsConfig, RunsProcessor
from tests.collector.governance.test_retention import append_native, append_spans, ns, spans, store
from tests.stores import service_store

NOW = datetime(2026, 6, 1, tzinfo=UTC)
__all__ = ["store"]  # the fixture, shared with test_retention


def live_files(store: Store, table: str) -> int:
    return int(
        store.query(
            """SELECT count(*) FROM __ducklake_metadata_lake.ducklake_data_file f
               JOIN __ducklake_metadata_lake.ducklake_table t USING (table_id)
               WHERE t.table_name = ? AND f.end_snapshot IS NULL AND t.end_snapshot IS NULL""",
            [table],
        )[0][0]
    )


def runs_of(store: Store) -> list[tuple[object, ...]]:
    return store.query(
        "SELECT org, run_id, status, llm_call_count, tool_use_count FROM runs ORDER BY 1, 2"
    )


def test_merges_under_concurrent_ingest_and_reads(store: Store, tmp_path: Path) -> None:
    derive = RunDeriver(store, RunsProcessor(RunsConfig()), clock=lambda: ns(NOW))
    compaction.prepare(store, CompactionConfig())
    for i in range(30):  # 30 commits: 30 small files
        append_spans(store, spans("acme", NOW - timedelta(hours=i), 10, f"a{i:02x}"))
    derive.step()
    assert live_files(store, "spans") >= 30
    stop = threading.Event()
    written: list[int] = []
    seen: list[int] = []
    errors: list[BaseException] = []

    def ingest() -> None:
        i = 0
        while not stop.is_set():
            try:
                append_spans(store, spans("acme", NOW, 5, f"b{i:04x}"))
                written.append(15)
                i += 1
            except BaseException as e:
                errors.append(e)
            time.sleep(0.01)

    def read() -> None:
        while not stop.is_set():
            try:
                n = store.query("SELECT count(*) FROM spans")[0][0]
                seen.append(int(n))
            except BaseException as e:
                errors.append(e)

    threads = [threading.Thread(target=ingest), threading.Thread(target=read)]
    for t in threads:
        t.start()
    try:
        result = compaction.compact(store, CompactionConfig(max_seconds=30))
        derive.step()
        compaction.reclaim(store, required=("runs",), grace_s=0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert result.merged.get("spans", 0) >= 1
    assert live_files(store, "spans") < 30
    total = 30 * 30 + sum(written)
    # No lost and no doubled row: every committed span once, and reads never saw more.
    assert store.query("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans") == [
        (total, total)
    ]
    assert max(seen) <= total and seen == sorted(seen)
    # Runs derived incrementally across compaction equal a derivation from scratch.
    while derive.step():
        pass
    incremental = runs_of(store)
    assert len(incremental) == 30 * 10 + sum(written) // 3
    with service_store(tmp_path / "fresh") as fresh:
        rows = store.query("SELECT * FROM spans")
        names = [d[0] for d in store.cursor().execute("SELECT * FROM spans LIMIT 0").description]
        append_spans(fresh, [dict(zip(names, r, strict=True)) for r in rows])
        again = RunDeriver(fresh, RunsProcessor(RunsConfig()), clock=lambda: ns(NOW))
        while again.step():
            pass
        assert runs_of(fresh) == incremental


def test_merged_spans_stay_in_commit_order_and_a_trace_is_found_in_its_window(
    store: Store,
) -> None:
    compaction.prepare(store, CompactionConfig())
    for i in reversed(range(12)):  # commit order is not trace order
        append_spans(store, spans("acme", NOW + timedelta(seconds=i), 200, f"c{i:02x}", pad=200))
    compaction.compact(store, CompactionConfig())
    assert live_files(store, "spans") == 1
    trace = "c05" + f"{7:029x}"
    rows = store.query(
        "SELECT span_id FROM spans WHERE org = 'acme' AND trace_id = ? "
        "AND start_time_unix_nano BETWEEN ? AND ?",
        [trace, ns(NOW), ns(NOW + timedelta(seconds=12))],
    )
    assert len(rows) == 3
    # Merged without a sort: the rows come back in the order they were committed.
    ids = [r[0] for r in store.query("SELECT trace_id FROM spans")]
    assert ids != sorted(ids)
    assert [i[:3] for i in ids[::600]] == [f"c{i:02x}" for i in reversed(range(12))]


def test_the_layout_sorts_each_lookup_table_by_its_key_once(tmp_path: Path) -> None:
    config = CompactionConfig(spans_row_group_rows=4096, runs_row_group_rows=2048)
    with service_store(tmp_path) as st:
        compaction.prepare(st, config)
        sorts_sql = """SELECT t.table_name,
                   string_agg(i.expression, ', ' ORDER BY i.sort_key_index)
                   FROM __ducklake_metadata_lake.ducklake_sort_info s
                   JOIN __ducklake_metadata_lake.ducklake_sort_expression i USING (sort_id)
                   JOIN __ducklake_metadata_lake.ducklake_table t ON t.table_id = s.table_id
                   WHERE s.end_snapshot IS NULL AND t.end_snapshot IS NULL GROUP BY 1"""
        sorts = dict(st.query(sorts_sql))
        assert sorts == {
            "span_runs": "org, trace_id",
            "runs": "run_key",
            "run_tools": "org, workflow_name, started_at",
        }
        options = {
            (r[0], r[2]): r[1]
            for r in st.query("SELECT option_name, value, scope_entry FROM lake.options()")
        }
        assert options[("parquet_row_group_size", "main.spans")] == "4096"
        assert options[("parquet_row_group_size", "main.span_runs")] == "2048"
        assert options[("parquet_row_group_size", "main.runs")] == "2048"
        assert options[("sort_on_insert", "main.spans")] == "false"  # ingest stays unsorted
        snapshot = st.query("SELECT id FROM lake.current_snapshot()")
        compaction.prepare(st, config)  # already laid out: no catalog write
        assert st.query("SELECT id FROM lake.current_snapshot()") == snapshot
        # A store from before sorted `spans` by trace: its sort order goes.
        st.query("ALTER TABLE lake.spans SET SORTED BY (org, trace_id)")
        compaction.prepare(st, config)
        assert "spans" not in dict(st.query(sorts_sql))


def test_flushes_inlined_rows_to_parquet(store: Store) -> None:
    for i in range(3):  # one-row commits stay inline in the catalog
        append_native(store, roi_store.TABLE, roi_store.SCHEMA,
                      [{"org": "acme", "event_id": f"e{i}", "occurred_at": NOW}])  # fmt: skip
    assert live_files(store, roi_store.TABLE) == 0
    result = compaction.compact(store, CompactionConfig())
    assert result.flushed >= 1
    assert live_files(store, roi_store.TABLE) >= 1
    assert store.query(f"SELECT count(*) FROM {roi_store.TABLE}") == [(3,)]
    assert retention.existing_tables(store) >= {"spans", roi_store.TABLE}


# `spans` merges of at most about 1 MiB; the commits below write files of incompressible
# attributes (~120 KB, ~36 KB), so a backlog of them takes several merges.
SMALL = CompactionConfig(spans_target_file_mib=1)


def file_sizes(store: Store, table: str) -> list[int]:
    return [
        int(r[0])
        for r in store.query(
            """SELECT file_size_bytes FROM __ducklake_metadata_lake.ducklake_data_file f
               JOIN __ducklake_metadata_lake.ducklake_table t USING (table_id)
               WHERE t.table_name = ? AND f.end_snapshot IS NULL AND t.end_snapshot IS NULL""",
            [table],
        )
    ]


def test_a_spans_merge_reads_at_most_about_its_target(store: Store) -> None:
    compaction.prepare(store, SMALL)
    for i in range(40):
        append_spans(store, spans("acme", NOW, 20, f"d{i:02x}", pad=1000))
    sizes = file_sizes(store, "spans")
    assert len(sizes) == 40
    result = compaction.compact(store, SMALL)
    merges = [files for table, files in result.inputs if table == "spans"]
    assert len(merges) == result.merged["spans"] >= 3
    # A merge stops adding files once the next would take it further from the target: at most
    # one file past it.
    most = (SMALL.spans_target_file_mib * MIB) // min(sizes) + 1
    assert max(merges) <= most < 40
    assert store.query("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans") == [
        (40 * 60, 40 * 60)
    ]


def test_small_files_are_merged_among_themselves_first(store: Store) -> None:
    compaction.prepare(store, SMALL)
    for i in range(24):
        append_spans(store, spans("acme", NOW, 20, f"e{i:02x}", pad=300))
    compaction.compact(store, SMALL)
    assert len(file_sizes(store, "spans")) < 24
    left = compaction.small_files(store, SMALL)  # one left over, with nothing to merge it with
    assert left <= 1
    for i in range(12):
        append_spans(store, spans("acme", NOW, 20, f"f{i:02x}", pad=300))
    result = compaction.compact(store, SMALL)
    # The new commits' files are merged with each other, not into the files merged before
    # (which would rewrite those with every few new commits).
    assert sum(files for table, files in result.inputs if table == "spans") == 12 + left
    assert store.query("SELECT count(*) FROM spans") == [(36 * 60,)]


def test_the_small_files_are_counted_against_their_bound(store: Store) -> None:
    compaction.prepare(store, SMALL)
    for i in range(6):
        append_spans(store, spans("acme", NOW, 20, f"9{i:02x}", pad=300))
    assert compaction.small_files(store, SMALL) == 6
    compaction.compact(store, SMALL)
    assert compaction.small_files(store, SMALL) <= 1
