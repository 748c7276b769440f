"""Tests for `collector/runs/derive.py`: a real DuckLake store in a temporary directory, spans
appended in several commits and out of order, runs derived from the change feed and read back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from collector.model import Rows, Signal
from collector.runs import derive
from collector.runs.derive import RunDeriver, trace_spans
from collector.runs.upkeep import fill_run_tools
from collector.store.keys import run_key
from collector.store.lake import ARROW_BATCH_ROWS, StoreSettings
from collector.store.schema import to_table
from collector.store.writer import Store
from processors.runs.assemble import RunsConfig, RunsProcessor

T1, T2 = "a1" * 16, "b2" * 16
S = 1_000_000_000
T0 = 1_700_000_000 * S
NOW = T0 + 120 * S


def sid(n: int) -> str:
    return f"{n:016x}"


def span(trace: str, n: int, parent: int | None, kind: str = "other", **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "org": "acme",
        "trace_id": trace,
        "span_id": sid(n),
        "parent_span_id": sid(parent) if parent is not None else None,
        "name": f"span-{n}",
        "start_time_unix_nano": T0 + n * S,
        "end_time_unix_nano": T0 + n * S + S // 2,
        "status_code": 0,
        "span_type": kind,
        "service_name": "svc",
        "links": "[]",
        "received_at": datetime.fromtimestamp((T0 + 60 * S) / S, UTC),
        "usage_is_aggregate": False,
        "is_error": False,
    }
    row.update(kw)
    return row


def agent(trace: str, n: int, parent: int | None = None, **kw: Any) -> dict[str, Any]:
    values = {"end_time_unix_nano": T0 + 100 * S, "agent_name": "triage", **kw}
    return span(trace, n, parent, "agent", name="invoke_agent", **values)


def llm(trace: str, n: int, parent: int, **kw: Any) -> dict[str, Any]:
    values = {"input_tokens": 100, "output_tokens": 10, "cost_usd": 0.01, **kw}
    return span(trace, n, parent, "llm", **values)


def tool(trace: str, n: int, parent: int, **kw: Any) -> dict[str, Any]:
    return span(trace, n, parent, "tool", tool_name="search", tool_args='{"q": 1}', **kw)


def settings(tmp: Path) -> StoreSettings:
    return StoreSettings(
        catalog=str(tmp / "catalog.ducklake"), data_path=str(tmp / "data") + "/",
        commit_interval_s=0.01,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(settings(tmp_path))
    s.open()
    try:
        yield s
    finally:
        s.close()


def append(store: Store, rows: list[dict[str, Any]], org: str = "acme") -> None:
    columns = {k: [r.get(k) for r in rows] for k in {k for r in rows for k in r}}
    table = to_table(Signal.TRACES, columns, len(rows))  # type: ignore[arg-type]
    asyncio.run(store.append(Rows(Signal.TRACES, org, table)))


def deriver(store: Store, **kw: Any) -> RunDeriver:
    return RunDeriver(store, RunsProcessor(RunsConfig()), clock=lambda: NOW, **kw)


def runs(store: Store) -> list[tuple[Any, ...]]:
    return store.query(
        "SELECT org, run_id, parent_run_id, status, llm_call_count, tool_use_count, total_tokens,"
        " round(cost_usd, 6) FROM runs ORDER BY org, run_id"
    )


def span_runs(store: Store) -> list[tuple[Any, ...]]:
    return store.query("SELECT org, span_id, run_id FROM span_runs ORDER BY org, span_id")


def snapshot(store: Store) -> int:
    return int(store.query("SELECT id FROM lake.current_snapshot()")[0][0])


def test_children_first_root_later_then_child_runs(store: Store) -> None:
    d = deriver(store)
    append(store, [llm(T1, 4, 3), tool(T1, 5, 3)])
    append(store, [llm(T1, 2, 1)])
    assert d.step() == 1
    # Both groups hang under missing parents: provisional runs, still running.
    assert [(r[1], r[3]) for r in runs(store)] == [
        (T1 + sid(1), "running"),
        (T1 + sid(3), "running"),
    ]
    append(store, [agent(T1, 3, 1, agent_name="sub")])
    append(store, [agent(T1, 1)])
    assert d.step() == 1
    assert runs(store) == [
        ("acme", T1 + sid(1), None, "success", 1, 0, 110, 0.01),
        ("acme", T1 + sid(3), T1 + sid(1), "success", 1, 1, 110, 0.01),
    ]
    assert [r[2] for r in span_runs(store)] == [T1 + sid(n) for n in (1, 1, 3, 3, 3)]
    assert d.step() == 0


def test_idle_steps_write_nothing(store: Store) -> None:
    d = deriver(store)
    append(store, [agent(T1, 1), llm(T1, 2, 1)])
    d.step()
    after = snapshot(store)
    for _ in range(3):
        assert d.step() == 0
    # Our own commit was one snapshot; steps that find no span changes add none.
    assert snapshot(store) == after
    # /metrics counts them as looks (the deriver is alive), not as steps that derived.
    assert (d.stats.steps, d.stats.looks) == (1, 4)


def test_a_retried_span_is_not_counted_twice(store: Store) -> None:
    d = deriver(store)
    rows = [agent(T1, 1), llm(T1, 2, 1)]
    append(store, rows)
    d.step()
    first = runs(store)
    append(store, rows)  # an OTLP retry
    append(store, [llm(T1, 2, 1)])
    d.step()
    assert runs(store) == first
    assert len(span_runs(store)) == 2


def test_a_step_that_fails_before_its_commit_is_redone_exactly_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = deriver(store)
    append(store, [agent(T1, 1), llm(T1, 2, 1)])
    d.step()
    append(store, [llm(T1, 3, 1), tool(T1, 4, 1)])
    real_call = store.call

    def crash(fn: Any) -> Any:
        raise RuntimeError("killed before the transaction")

    monkeypatch.setattr(store, "call", crash)
    with pytest.raises(RuntimeError):
        d.step()
    monkeypatch.setattr(store, "call", real_call)
    assert runs(store)[0][4] == 1  # nothing of the failed step is visible
    assert deriver(store).step() == 1
    assert runs(store) == [("acme", T1 + sid(1), None, "success", 2, 1, 220, 0.02)]


def test_restart_mid_way_resumes_from_the_watermark(tmp_path: Path) -> None:
    s = Store(settings(tmp_path))
    s.open()
    append(s, [llm(T1, 2, 1), llm(T2, 2, 1)])
    deriver(s).step()
    append(s, [agent(T1, 1)])
    s.close()  # the collector stops between the commit and the next step
    s = Store(settings(tmp_path))
    s.open()
    try:
        append(s, [agent(T2, 1), tool(T2, 3, 1)])
        d = deriver(s)
        assert d.step() == 2
        assert runs(s) == [
            ("acme", T1 + sid(1), None, "success", 1, 0, 110, 0.01),
            ("acme", T2 + sid(1), None, "success", 1, 1, 110, 0.01),
        ]
        assert d.step() == 0
    finally:
        s.close()


def test_overdue_runs_become_timeouts_and_a_late_root_still_wins(store: Store) -> None:
    d = deriver(store)
    append(store, [llm(T1, 2, 1)])
    d.step()
    assert runs(store)[0][3] == "running"
    received = T0 + 60 * S
    assert d.step(now_ns=received + 3599 * S) == 0
    assert d.step(now_ns=received + 3600 * S) == 1
    assert runs(store)[0][3] == "timeout"
    assert d.step(now_ns=received + 7200 * S) == 0  # a timeout is not swept again
    append(store, [agent(T1, 1)])
    d.step(now_ns=received + 7200 * S)
    assert runs(store)[0][3] == "success"


def test_idle_steps_look_for_overdue_runs_only_when_one_can_have_timed_out(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks: list[int] = []
    plain = store.query

    def counting(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        if "status = 'running'" in sql:
            looks.append(1)
        return plain(sql, params)

    monkeypatch.setattr(store, "query", counting)
    d = deriver(store)
    d.step()  # the first step looks at all runs: there are none
    looks.clear()
    for _ in range(3):
        d.step()
    assert looks == []  # nothing waiting, nothing committed: no look
    append(store, [llm(T1, 2, 1)])  # a run waiting for its root
    d.step()
    d.step()  # the commit made a running run: this step looks, and learns when it is due
    looks.clear()
    received = T0 + 60 * S
    assert d.step(now_ns=received + 3599 * S) == 0
    assert looks == []  # not due yet
    assert d.step(now_ns=received + 3600 * S) == 1
    assert looks and runs(store)[0][3] == "timeout"


def test_a_run_left_waiting_while_derivation_was_stopped_times_out_after_a_restart(
    store: Store,
) -> None:
    append(store, [llm(T1, 2, 1)])
    deriver(store).step()
    assert runs(store)[0][3] == "running"
    # Days later (derivation was off): far outside the start-time bound of the per-step scan,
    # but the first step of a new deriver looks at every waiting run.
    assert deriver(store).step(now_ns=T0 + 30 * 86400 * S) == 1
    assert runs(store)[0][3] == "timeout"


def test_orgs_are_kept_apart(store: Store) -> None:
    d = deriver(store)
    append(store, [agent(T1, 1), llm(T1, 2, 1)])
    append(store, [{**agent(T1, 1), "org": "globex"}], org="globex")
    d.step()
    assert [(r[0], r[4]) for r in runs(store)] == [("acme", 1), ("globex", 0)]


def test_a_linked_trace_arriving_later_updates_the_child_run(store: Store) -> None:
    d = deriver(store)
    link = f'[{{"trace_id": "{T1}", "span_id": "{sid(2)}"}}]'
    append(store, [agent(T2, 7, links=link, start_time_unix_nano=T0 + 50 * S)])
    d.step()
    assert runs(store)[0][2] is None
    append(store, [agent(T1, 1), tool(T1, 2, 1)])
    d.step()
    by_id = {r[1]: r for r in runs(store)}
    assert by_id[T2 + sid(7)][2] == T1 + sid(1)


def test_a_backlog_is_worked_off_in_bounded_steps(store: Store) -> None:
    d = deriver(store, max_snapshots=2)
    for n in range(2, 8):
        append(store, [llm(T1, n, 1)])
    append(store, [agent(T1, 1)])
    steps = 0
    while True:
        steps += 1
        d.step()
        if not d.behind:
            break
    assert steps > 2
    assert runs(store) == [("acme", T1 + sid(1), None, "success", 6, 0, 660, 0.06)]


def test_run_forever_steps_until_stopped(store: Store) -> None:
    d = RunDeriver(store, RunsProcessor(RunsConfig(interval_ms=10)))
    d.create_tables()  # as the service does after `store.open()`, before anyone reads
    append(store, [agent(T1, 1), llm(T1, 2, 1)])

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(d.run_forever(stop))
        for _ in range(200):
            await asyncio.sleep(0.02)
            if await asyncio.to_thread(runs, store):
                break
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(go())
    assert [r[3] for r in runs(store)] == ["success"]


def test_runs_carry_integer_lookup_keys_and_old_tables_gain_them(store: Store) -> None:
    d = deriver(store)
    append(store, [agent(T1, 1), agent(T1, 3, 1, agent_name="sub"), llm(T1, 4, 3)])
    d.step()
    keyed = store.query("SELECT run_id, run_key, parent_run_key FROM runs ORDER BY run_id")
    assert keyed == [
        (T1 + sid(1), run_key("acme", T1 + sid(1)), None),
        (T1 + sid(3), run_key("acme", T1 + sid(3)), run_key("acme", T1 + sid(1))),
    ]
    # A store from before the key columns: drop them, and the next start adds and fills them.
    store.call(lambda cur: cur.execute("ALTER TABLE runs DROP COLUMN parent_run_key"))
    store.call(lambda cur: cur.execute("ALTER TABLE runs DROP COLUMN run_key"))
    deriver(store).create_tables()
    again = store.query("SELECT run_id, run_key, parent_run_key FROM runs ORDER BY run_id")
    assert again == keyed


def test_runs_list_their_calls_and_old_tables_gain_the_column(store: Store) -> None:
    d = deriver(store)
    append(store, [agent(T1, 1), llm(T1, 2, 1), agent(T1, 3, 1, agent_name="sub")])
    append(store, [tool(T1, 5, 3), llm(T1, 4, 3)])
    d.step()
    listed = store.query("SELECT run_id, call_span_ids FROM runs ORDER BY run_id")
    assert listed == [
        (T1 + sid(1), bytes.fromhex(sid(2))),
        (T1 + sid(3), bytes.fromhex(sid(4) + sid(5))),
    ]
    # A store from before the column: its runs keep NULL (their detail asks span_runs) until
    # their trace changes, and new rows are written by name whatever the column order.
    store.call(lambda cur: cur.execute("ALTER TABLE runs DROP COLUMN call_span_ids"))
    store.call(lambda cur: cur.execute("ALTER TABLE runs DROP COLUMN run_key"))
    d = deriver(store)
    d.create_tables()
    assert store.query("SELECT count(*) FROM runs WHERE call_span_ids IS NULL") == [(2,)]
    append(store, [agent(T2, 1), llm(T2, 2, 1)])
    d.step()
    assert store.query("SELECT call_span_ids, run_key FROM runs WHERE trace_id = ?", [T2]) == [
        (bytes.fromhex(sid(2)), run_key("acme", T2 + sid(1)))
    ]


def run_tools(store: Store) -> list[tuple[Any, ...]]:
    return store.query(
        "SELECT run_id, workflow_name, tool, failed, latency_ms, first_of_tool FROM run_tools"
        " ORDER BY run_id, tool, latency_ms, first_of_tool DESC"
    )


def test_runs_write_their_tool_calls_and_old_stores_gain_them(store: Store) -> None:
    d = deriver(store)
    append(store, [agent(T1, 1), tool(T1, 2, 1), tool(T1, 3, 1, is_error=True)])
    append(store, [span(T1, 4, 1, "tool"), agent(T1, 5, 1, agent_name="sub")])
    append(store, [tool(T1, 6, 5, status_code=2, end_time_unix_nano=T0 + 8 * S)])
    d.step()
    root, sub = T1 + sid(1), T1 + sid(5)
    assert run_tools(store) == [
        (root, "triage", "search", False, 500.0, True),
        (root, "triage", "search", True, 500.0, False),
        (root, "triage", "span-4", False, 500.0, True),
        (sub, "sub", "search", True, 2000.0, True),
    ]
    # A late call of a derived run replaces the run's rows; it is not its first search.
    append(store, [tool(T1, 7, 1)])
    d.step()
    derived = run_tools(store)
    assert len(derived) == 5 and (root, "triage", "search", False, 500.0, False) in derived
    # The SQL that fills the table for runs derived before it writes the same rows.
    store.call(lambda cur: cur.execute("DELETE FROM run_tools"))
    store.call(fill_run_tools)
    assert run_tools(store) == derived
    # By slices of start time (a run a slice here), as a big store is filled: the same rows.
    store.call(lambda cur: cur.execute("DELETE FROM run_tools"))
    assert store.call(lambda cur: fill_run_tools(cur, chunk_runs=1)) == 5
    assert run_tools(store) == derived
    # A store from before the table gains it, filled, when a deriver starts on it.
    store.call(lambda cur: cur.execute("DROP TABLE run_tools"))
    deriver(store).create_tables()
    assert run_tools(store) == derived


def test_new_traces_come_from_the_change_feed_and_known_ones_are_read_back(store: Store) -> None:
    d = deriver(store)
    d.step()  # learns the stored traces (none): a trace stored before is read back once
    append(store, [agent(T1, 1), llm(T1, 2, 1)])
    assert d.step() == 1
    assert (d.stats.traces_new, d.stats.traces_stored, d.stats.spans_read_back) == (1, 0, 0)
    append(store, [tool(T1, 3, 1)])  # more of a known trace
    append(store, [agent(T2, 1)])  # and a new one
    assert d.step() == 2
    assert (d.stats.traces_new, d.stats.traces_stored, d.stats.spans_read_back) == (2, 1, 3)
    assert d.stats.traces_uncovered == 0
    assert runs(store) == [
        ("acme", T1 + sid(1), None, "success", 1, 1, 110, 0.01),
        ("acme", T2 + sid(1), None, "success", 0, 0, 0, 0.0),
    ]
    assert len(span_runs(store)) == 4


def test_a_restarted_deriver_knows_the_traces_already_stored(store: Store) -> None:
    deriver(store).step()
    append(store, [agent(T1, 1), llm(T1, 2, 1)])
    deriver(store).step()
    d = deriver(store)  # a new process: what it knows comes from the store
    append(store, [tool(T1, 3, 1)])
    assert d.step() == 1
    assert (d.stats.traces_new, d.stats.traces_stored) == (0, 1)
    assert runs(store) == [("acme", T1 + sid(1), None, "success", 1, 1, 110, 0.01)]


def test_rows_of_spans_deleted_since_are_still_replaced(store: Store) -> None:
    d = deriver(store)
    append(store, [agent(T1, 1), llm(T1, 2, 1)])
    d.step()
    # Retention took the run span (its run and span_runs rows keep their own TTL) ...
    store.call(lambda cur: cur.execute("DELETE FROM spans WHERE span_id = ?", [sid(1)]))
    d.step()
    # ... and after a restart a late span of the trace arrives: the run row started with the
    # deleted span is replaced, not left beside the new one.
    d = deriver(store)
    append(store, [tool(T1, 5, 1)])
    d.step()
    assert [(r[1], r[3]) for r in runs(store)] == [(T1 + sid(1), "running")]
    assert [r[1] for r in span_runs(store)] == [sid(2), sid(5)]


def test_a_trace_older_than_what_is_known_is_read_back_within_the_longest_trace(
    store: Store,
) -> None:
    config = RunsConfig(max_trace_duration_s=3600)
    append(store, [agent(T1, 1), llm(T1, 2, 1)])
    RunDeriver(store, RunsProcessor(config), clock=lambda: NOW).step()
    # Two days later a new deriver knows only the last trace duration and an epoch of starts;
    # a late span of the old trace arrives (it started within the trace's hour).
    later = NOW + 2 * 86400 * S
    d = RunDeriver(store, RunsProcessor(config), clock=lambda: later)
    append(store, [tool(T1, 30, 1)])
    assert d.step() == 1
    assert d.stats.traces_uncovered == 1 and d.stats.spans_read_back == 3
    assert runs(store) == [("acme", T1 + sid(1), None, "success", 1, 1, 110, 0.01)]


def test_a_deriver_whose_watermark_another_moved_relearns_the_stored_traces(
    store: Store,
) -> None:
    first = deriver(store)
    first.step()
    append(store, [agent(T1, 1)])
    first.step()
    other = deriver(store)  # e.g. a node that held the lease meanwhile
    append(store, [agent(T2, 1), llm(T2, 2, 1)])
    other.step()
    append(store, [tool(T2, 3, 1)])
    first._feed.forget()  # as after its step lost to the other's (WatermarkMoved)
    assert first.step() == 1
    assert first.stats.traces_stored == 1  # T2 was learnt from the store, not taken as new
    assert [(r[1], r[4], r[5]) for r in runs(store)] == [
        (T1 + sid(1), 0, 0),
        (T2 + sid(1), 1, 1),
    ]


def test_a_query_stuck_past_its_bound_is_interrupted_and_counted(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(derive, "QUERY_TIMEOUT_S", 0.2)
    d = deriver(store)
    with pytest.raises(duckdb.InterruptException), d._cursor() as cur:
        cur.execute("SELECT count(*) FROM range(1000000000000) a").fetchall()
    assert d.stats.interrupted == 1
    with d._cursor() as cur:  # a query within the bound is left alone
        assert cur.execute("SELECT 42").fetchone() == (42,)
    assert d.stats.interrupted == 1


def test_spans_are_read_back_in_bounded_record_batches(store: Store) -> None:
    # DuckDB reserves a whole record batch before filling it: with its default of a million
    # rows, every read-back reserved hundreds of MiB, however few spans it found.
    n = ARROW_BATCH_ROWS + 10
    store.call(
        lambda cur: cur.execute(
            "INSERT INTO spans BY NAME SELECT 'acme' AS org, ? AS trace_id, "
            "printf('%016x', range) AS span_id, range AS start_time_unix_nano FROM range(?)",
            [T1, n],
        )
    )
    cur = store.cursor()
    try:
        table = trace_spans(cur, "span_id", "acme", [T1], (0, n))
    finally:
        cur.close()
    assert table.num_rows == n
    assert max(b.num_rows for b in table.to_batches()) <= ARROW_BATCH_ROWS
