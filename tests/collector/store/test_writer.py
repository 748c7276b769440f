"""Tests for `collector/store/writer.py`: the DuckLake store in a temporary directory, used
directly.

Rows are built the way the pipeline builds them (decode → `to_table`), appended concurrently
to exercise group commit, and read back with `Store.query` or from a reopened store.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.decode import decode
from collector.model import Accepted, MalformedPayload, Rows, Signal, StoreUnavailable
from collector.store.lake import StoreSettings, connect, prime_table_stats
from collector.store.schema import to_table
from collector.store.writer import Store
from tests.otlp_factory import export_request, kv

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")


def settings(tmp: Path, **kw: object) -> StoreSettings:
    return StoreSettings(
        catalog=str(tmp / "catalog.ducklake"),
        data_path=str(tmp / "data") + "/",
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(settings(tmp_path, commit_interval_s=0.1))
    s.open()
    try:
        yield s
    finally:
        s.close()


def span(n: int, name: str = "", trace: bytes = TRACE) -> Span:
    return Span(
        trace_id=trace,
        span_id=n.to_bytes(8, "big"),
        name=name or f"span-{n}",
        start_time_unix_nano=1_000 + n,
        end_time_unix_nano=2_000 + n,
        attributes=[kv("n", n)],
    )


def span_rows(spans: list[Span], org: str = "acme") -> Rows:
    batch = decode(Signal.TRACES, org, export_request(spans).SerializeToString(), "protobuf")
    return Rows(Signal.TRACES, org, to_table(Signal.TRACES, batch.columns, len(batch)), 0)


def append_all(store: Store, rows: list[Rows]) -> list[Accepted]:
    async def go() -> list[Accepted]:
        return list(await asyncio.gather(*(store.append(r) for r in rows)))

    return asyncio.run(go())


def count_spans(store: Store, org: str = "acme") -> int:
    return int(store.query("SELECT count(*) FROM spans WHERE org = ?", [org])[0][0])


def test_append_commits_and_returns_the_counts(store: Store) -> None:
    [result] = append_all(store, [span_rows([span(1), span(2), span(3)])])
    assert result == Accepted(accepted=3, duplicates=0, rejected=0)
    rows = store.query(
        "SELECT org, trace_id, span_id, name, start_time_unix_nano, attributes->>'n' "
        "FROM spans ORDER BY span_id"
    )
    assert rows == [
        ("acme", TRACE.hex(), f"{i:016x}", f"span-{i}", 1_000 + i, str(i)) for i in (1, 2, 3)
    ]
    assert store.stats.commits == 1 and store.stats.rows_committed == 3
    assert store.size_bytes() > 0


def test_concurrent_appends_share_one_group_commit(store: Store) -> None:
    requests = [span_rows([span(10 * i + j + 1) for j in range(3)]) for i in range(5)]
    results = append_all(store, requests)
    assert results == [Accepted(3, 0, 0)] * 5
    assert store.stats.commits == 1  # all five arrived within the commit interval
    assert store.stats.rows_committed == 15
    assert count_spans(store) == 15


def test_rejected_count_of_rows_is_reported_back(store: Store) -> None:
    rows = span_rows([span(1)])
    [result] = append_all(store, [Rows(rows.signal, rows.org, rows.table, rejected=2)])
    assert result == Accepted(1, 0, 2)


def test_duplicates_within_one_request_and_one_group_are_stored_once(store: Store) -> None:
    first = span_rows([span(1), span(2), span(1, name="again")])
    second = span_rows([span(2), span(3)])
    results = append_all(store, [first, second])
    assert store.stats.commits == 1
    assert results == [Accepted(2, 1, 0), Accepted(1, 1, 0)]
    assert store.query("SELECT span_id, name FROM spans ORDER BY span_id") == [
        (f"{1:016x}", "span-1"),  # the first of equals wins
        (f"{2:016x}", "span-2"),
        (f"{3:016x}", "span-3"),
    ]


def test_duplicates_across_commits_are_stored_once(store: Store) -> None:
    assert append_all(store, [span_rows([span(1), span(2)])]) == [Accepted(2, 0, 0)]
    assert append_all(store, [span_rows([span(2), span(3)])]) == [Accepted(1, 1, 0)]
    assert append_all(store, [span_rows([span(1), span(2), span(3)])]) == [Accepted(0, 3, 0)]
    assert count_spans(store) == 3
    assert store.stats.deduplicated == 4


def test_same_span_id_in_another_trace_is_not_a_duplicate(store: Store) -> None:
    other = bytes.fromhex("11111111111111111111111111111111")
    append_all(store, [span_rows([span(1)])])
    assert append_all(store, [span_rows([span(1, trace=other)])]) == [Accepted(1, 0, 0)]
    assert count_spans(store) == 2


def test_duplicates_are_recognised_after_reopening(tmp_path: Path) -> None:
    first = Store(settings(tmp_path))
    first.open()
    assert append_all(first, [span_rows([span(1), span(2)])]) == [Accepted(2, 0, 0)]
    first.close()
    first.close()  # safe twice

    again = Store(settings(tmp_path))
    again.open()
    try:
        assert append_all(again, [span_rows([span(2), span(3)])]) == [Accepted(1, 1, 0)]
        assert count_spans(again) == 3
    finally:
        again.close()


def test_a_store_from_before_the_price_columns_gains_them(tmp_path: Path) -> None:
    first = Store(settings(tmp_path))
    first.open()
    append_all(first, [span_rows([span(1)])])
    first.close()
    con = connect(settings(tmp_path))  # the store as an older release left it: no price columns
    for column in ("price_mode", "price_effective_from", "price_source"):
        con.execute(f"ALTER TABLE lake.spans DROP COLUMN {column}")
    con.close()

    again = Store(settings(tmp_path))
    again.open()
    try:
        rows = span_rows([span(2)])
        priced = rows.table.set_column(
            rows.table.schema.get_field_index("price_source"), "price_source",
            pa.array(["genai-prices"]),
        )  # fmt: skip
        append_all(again, [Rows(Signal.TRACES, "acme", priced, 0)])
        found = again.query("SELECT span_id, price_source, price_mode FROM spans ORDER BY span_id")
        assert found == [
            ("0000000000000001", None, None),  # stored before: the new columns are empty
            ("0000000000000002", "genai-prices", None),  # written into the right column
        ]
    finally:
        again.close()


def test_orgs_are_kept_apart(store: Store) -> None:
    append_all(store, [span_rows([span(1)], "acme"), span_rows([span(2)], "globex")])
    assert count_spans(store, "acme") == 1 and count_spans(store, "globex") == 1


def test_logs_and_metrics_go_to_their_tables(store: Store) -> None:
    logs = ExportLogsServiceRequest()
    records = logs.resource_logs.add().scope_logs.add().log_records
    records.add(time_unix_nano=5, severity_text="WARN").body.string_value = "careful"
    records.add(time_unix_nano=6).body.int_value = 7
    metrics = ExportMetricsServiceRequest()
    metric = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="tokens")
    metric.sum.data_points.add(time_unix_nano=9, as_int=42)

    def rows_of(signal: Signal, payload: bytes) -> Rows:
        batch = decode(signal, "acme", payload, "protobuf")
        return Rows(signal, "acme", to_table(signal, batch.columns, len(batch)))

    results = append_all(
        store,
        [
            rows_of(Signal.LOGS, logs.SerializeToString()),
            rows_of(Signal.METRICS, metrics.SerializeToString()),
            span_rows([span(1)]),
        ],
    )
    assert results == [Accepted(2, 0, 0), Accepted(1, 0, 0), Accepted(1, 0, 0)]
    assert store.stats.commits == 1
    logs_rows = store.query(
        "SELECT org, time_unix_nano, severity_text, body FROM logs ORDER BY time_unix_nano"
    )
    assert [(o, t, s, json.loads(b)) for o, t, s, b in logs_rows] == [
        ("acme", 5, "WARN", "careful"),
        ("acme", 6, None, 7),
    ]
    assert store.query("SELECT org, metric_name, metric_type, value FROM metrics") == [
        ("acme", "tokens", "sum", 42.0)
    ]
    # Log records and points carry no identity: the same one sent twice is stored twice.
    assert append_all(store, [rows_of(Signal.LOGS, logs.SerializeToString())]) == [
        Accepted(2, 0, 0)
    ]


def test_a_failed_commit_fails_only_the_bad_request_and_the_store_goes_on(store: Store) -> None:
    bad = Rows(Signal.LOGS, "acme", pa.table({"nonsense": [1]}))

    async def go() -> list[Accepted | BaseException]:
        return list(
            await asyncio.gather(
                store.append(bad), store.append(span_rows([span(1)])), return_exceptions=True
            )
        )

    results = asyncio.run(go())
    # The shared commit failed; each request was then committed alone.
    assert isinstance(results[0], StoreUnavailable)
    assert results[1] == Accepted(1, 0, 0)
    assert store.stats.commit_failures == 2
    assert count_spans(store) == 1
    assert append_all(store, [span_rows([span(1)])]) == [Accepted(0, 1, 0)]  # now a retry


def test_call_runs_in_a_transaction(store: Store) -> None:
    assert (
        store.call(lambda cur: cur.execute("INSERT INTO orgs VALUES ('a', now(), '{}')"))
        is not None
    )
    assert store.call(lambda cur: cur.execute("SELECT count(*) FROM orgs").fetchall()) == [(1,)]

    def half_then_fail(cur: duckdb.DuckDBPyConnection) -> None:
        cur.execute("INSERT INTO orgs VALUES ('b', now(), '{}')")
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        store.call(half_then_fail)
    assert store.query("SELECT name FROM orgs ORDER BY name") == [("a",)]  # 'b' rolled back

    async def acall() -> object:
        return await store.acall(lambda cur: cur.execute("SELECT 41 + 1").fetchall())

    assert asyncio.run(acall()) == [(42,)]


def test_call_runs_on_the_writer_thread(store: Store) -> None:
    names = store.call(lambda cur: threading.current_thread().name)
    assert names == "store-writer"


def test_query_is_parametrised_and_bounded_by_the_timeout(tmp_path: Path) -> None:
    s = Store(settings(tmp_path, query_timeout_s=0.3))
    s.open()
    try:
        append_all(s, [span_rows([span(1)])])
        # A parameter is a value, never SQL.
        assert s.query("SELECT count(*) FROM spans WHERE name = ?", ["x' OR '1'='1"]) == [(0,)]
        assert s.query("SELECT name FROM spans WHERE name = $n", {"n": "span-1"}) == [("span-1",)]
        with pytest.raises(duckdb.InterruptException):
            s.query("SELECT sum(hash(i)) FROM range(1000000000000) t(i)")
        assert s.query("SELECT count(*) FROM spans") == [(1,)]  # still usable afterwards
    finally:
        s.close()


def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    s = Store(settings(tmp_path))
    with pytest.raises(StoreUnavailable):
        s.call(lambda cur: None)  # never opened
    s.open()
    s.close()
    with pytest.raises(StoreUnavailable):
        s.query("SELECT 1")
    with pytest.raises(StoreUnavailable):
        append_all(s, [span_rows([span(1)])])


def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    s = Store(settings(tmp_path, commit_interval_s=5.0))
    s.open()

    async def go() -> Accepted:
        task = asyncio.ensure_future(s.append(span_rows([span(1), span(2)])))
        await asyncio.sleep(0.05)  # queued, the commit interval is far from over
        await asyncio.to_thread(s.close)
        return await task

    assert asyncio.run(go()) == Accepted(2, 0, 0)
    again = Store(settings(tmp_path))
    again.open()
    try:
        assert count_spans(again) == 2
    finally:
        again.close()


def test_never_written_tables_get_statistics_and_keep_their_rows(store: Store) -> None:
    def setup(cur: duckdb.DuckDBPyConnection) -> None:
        cur.execute("CREATE TABLE blank (org VARCHAR, n INTEGER)")
        cur.execute("CREATE TABLE held (org VARCHAR, n INTEGER)")
        cur.execute("INSERT INTO held VALUES ('acme', 1)")

    store.call(setup)
    primed = store.call(prime_table_stats)
    assert "blank" in primed
    assert not {"held", "spans", "logs", "metrics"} & set(primed)
    stats = store.query(
        """SELECT t.table_name FROM __ducklake_metadata_lake.ducklake_table_stats s
           JOIN __ducklake_metadata_lake.ducklake_table t USING (table_id)
           WHERE t.end_snapshot IS NULL"""
    )
    assert ("blank",) in stats
    assert store.query("SELECT count(*) FROM blank") == [(0,)]
    assert store.query("SELECT * FROM held") == [("acme", 1)]
    assert store.call(prime_table_stats) == []  # once is enough


def test_values_the_store_refuses_are_a_permanent_error_for_otlp_rows(store: Store) -> None:
    rows = span_rows([span(1)])
    bad = rows.table.set_column(
        rows.table.schema.get_field_index("attributes"), "attributes", pa.array(["{not json"])
    )

    async def go() -> BaseException | Accepted:
        try:
            return await store.append(Rows(Signal.TRACES, "acme", bad))
        except Exception as e:
            return e

    result = asyncio.run(go())
    assert isinstance(result, MalformedPayload), result
    assert "refused the values" in str(result)
    assert store.stats.commit_failures == 1
    assert store.stats.failing_since is None  # the rows were at fault, not the store
    assert append_all(store, [span_rows([span(2)])]) == [Accepted(1, 0, 0)]


def test_the_reason_for_rejected_items_is_reported_back(store: Store) -> None:
    rows = span_rows([span(1)])
    refused = Rows(rows.signal, rows.org, rows.table, rejected=1, rejection_message="why")
    assert append_all(store, [refused]) == [Accepted(1, 0, 1, "why")]
