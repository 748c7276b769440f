"""The read API benchmark's store: `--runs` synthetic runs (~10 spans each, over 30 days) made
with DuckDB `range()` INSERTs a day at a time, then merged by the server's own compaction.

Used by `bench/read_api.py`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from datetime import datetime

import pyarrow as pa

from collector.governance.compaction import CompactionConfig, apply_layout, compact
from collector.model import Signal
from collector.runs.upkeep import add_run_keys, fill_run_tools
from collector.store.keys import run_key
from collector.store.lake import StoreSettings, connect
from collector.store.schema import DERIVED_TABLES, create_derived_sql, create_table_sql
from collector.store.writer import META_DDL, Store

ORG = "bench"
DAYS = 30


# Per run i: its trace and run-span ids, a hash for the random-looking choices, and its start,
# spread evenly over the 30 days up to $end_s (rows arrive in time order, as ingest writes them).
_RUN_BASE = """SELECT i, md5(i::VARCHAR) AS trace_id, substr(md5('s' || i::VARCHAR), 1, 16) AS sid,
    (hash(i) % 1000000007)::BIGINT AS h,
    to_timestamp($end_s - $span_s + i * ($span_s / $n)) AS started,
    500 + (hash(i) % 60000)::BIGINT AS dur_ms
    FROM range($lo, $hi) t(i)"""

_RUNS_INSERT = f"""INSERT INTO runs (org, run_id, trace_id, span_id, workflow_name, status,
    started_at, ended_at, duration_ms, cost_usd, cost_unknown_calls, input_tokens,
    output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, total_tokens,
    llm_call_count, tool_use_count, error_count, session_id, user_id, input_excerpt,
    output_excerpt, error_type, service_name, last_span_at, updated_at, run_key, call_span_ids)
SELECT '{ORG}', trace_id || sid, trace_id, sid,
    -- 40 workflows, a few much busier than the rest (as real fleets are)
    'workflow-' || lpad(((h % 1000) * (h % 1000) // 25000)::VARCHAR, 2, '0'),
    CASE WHEN h % 100 < 93 THEN 'success' WHEN h % 100 < 98 THEN 'error'
         WHEN h % 100 = 98 THEN 'timeout' ELSE 'loop_detected' END,
    started, started + to_milliseconds(dur_ms), dur_ms,
    (h % 10000) / 100000.0, 0, 5 * (200 + h % 4000), 5 * (20 + h % 800), 0, 0, 0,
    5 * (220 + h % 4000 + h % 800), 5, 4,
    CASE WHEN h % 100 BETWEEN 93 AND 97 THEN 1 ELSE 0 END,
    'session-' || (h % 100000), 'user-' || (h % 5000), 'Summarise ticket #' || i,
    'Done: ' || i, CASE WHEN h % 100 BETWEEN 93 AND 97 THEN 'RateLimitError' END,
    'agent-service', started + to_milliseconds(dur_ms), now(), k.run_key,
    -- its calls' span ids, as `_SPAN_BASE` makes them (every span but the run span)
    unhex(array_to_string(
        list_transform(range(1, $per_run), lambda j: substr(md5(i || '-' || j), 1, 16)), ''))
FROM ({_RUN_BASE}) JOIN _keys k USING (i)"""

# Ten spans a run: the run (agent) span, then LLM calls (odd j) and tool calls (even j).
_SPAN_BASE = f"""SELECT b.*, j, epoch_ns(started) + j * dur_ms * 100000 AS start_ns,
    CASE WHEN j = 0 THEN sid ELSE substr(md5(i || '-' || j), 1, 16) END AS span_id,
    CASE WHEN j = 0 THEN 'agent' WHEN j % 2 = 1 THEN 'llm' ELSE 'tool' END AS span_type,
    (['gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4', 'gemini-2.5-flash'])[1 + (h + j) % 4] AS model,
    (['search', 'fetch', 'read_file', 'write_file', 'sql'])[1 + (h + j) % 5] AS tool
    FROM ({_RUN_BASE}) b, range($per_run) k(j)"""
_SPANS_INSERT = f"""INSERT INTO spans (org, trace_id, span_id, parent_span_id, name, kind,
    start_time_unix_nano, end_time_unix_nano, status_code, service_name, attributes,
    received_at, span_type, operation, agent_name, model, provider, input_tokens,
    output_tokens, cost_usd, cost_source, tool_name, tool_call_id, is_error)
SELECT '{ORG}', trace_id, span_id, CASE WHEN j = 0 THEN NULL ELSE sid END,
    CASE WHEN j = 0 THEN 'invoke_agent' WHEN j % 2 = 1 THEN 'chat ' || model
         ELSE 'execute_tool ' || tool END,
    CASE WHEN j % 2 = 1 THEN 3 ELSE 1 END,
    start_ns, start_ns + CASE WHEN j = 0 THEN dur_ms * 1000000 ELSE dur_ms * 80000 END,
    0, 'agent-service', '{{}}', now(), span_type,
    CASE WHEN j = 0 THEN 'invoke_agent' WHEN j % 2 = 1 THEN 'chat' ELSE 'execute_tool' END,
    CASE WHEN j = 0 THEN 'workflow' END,
    CASE WHEN j % 2 = 1 THEN model END, CASE WHEN j % 2 = 1 THEN 'openai' END,
    CASE WHEN j % 2 = 1 THEN 200 + h % 4000 END, CASE WHEN j % 2 = 1 THEN 20 + h % 800 END,
    CASE WHEN j % 2 = 1 THEN (h % 10000) / 500000.0 END,
    CASE WHEN j % 2 = 1 THEN 'computed' END,
    CASE WHEN j > 0 AND j % 2 = 0 THEN tool END,
    CASE WHEN j > 0 AND j % 2 = 0 THEN 'call_' || i || '_' || j END, false
FROM ({_SPAN_BASE})"""

# Which run each span belongs to: the run span itself, or its parent (every span is a child).
_SPAN_RUNS_INSERT = f"""INSERT INTO span_runs
SELECT '{ORG}', trace_id, span_id, trace_id || sid, span_type, start_ns FROM ({_SPAN_BASE})"""


def run_keys(n: int) -> pa.Table:
    """The integer lookup key the deriver gives each run (`collector.store.dedup.run_key`), for the
    run ids `_RUN_BASE` makes: md5(i) then 16 hex of md5('s' || i)."""
    keys = []
    for i in range(n):
        run_id = hashlib.md5(str(i).encode()).hexdigest()
        run_id += hashlib.md5(f"s{i}".encode()).hexdigest()[:16]
        keys.append(run_key(ORG, run_id))
    return pa.table({"i": pa.array(range(n), pa.int64()), "run_key": pa.array(keys, pa.int64())})


def build(
    settings: StoreSettings, n: int, per_run: int, end: datetime, config: CompactionConfig
) -> dict[str, float]:
    """Creates and fills the tables, a day at a time (a file a day and table, each sorted by its
    lookup key as the server's compaction sorts it), then merges the small files with the
    server's compaction (`collector/governance/compaction.py`); returns seconds per step."""
    con = connect(settings)
    con.execute("USE lake")
    for ddl in (create_table_sql(Signal.TRACES), *META_DDL):
        con.execute(ddl)
    for name in DERIVED_TABLES:
        con.execute(create_derived_sql(name))
    apply_layout(con, config)
    # Ingest leaves spans unsorted until compaction merges them: sort them as they go in here.
    con.execute("CALL lake.set_option('sort_on_insert', 'true', table_name => 'spans')")
    took = dict.fromkeys(("runs", "spans", "span_runs"), 0.0)
    t = time.perf_counter()
    con.register("_keys", run_keys(n))
    print(f"  run keys: {time.perf_counter() - t:.1f} s", flush=True)
    for day in range(DAYS):
        params = {
            "n": n,
            "lo": n * day // DAYS,
            "hi": n * (day + 1) // DAYS,
            "end_s": end.timestamp(),
            "span_s": DAYS * 86400.0,
        }
        for name, sql, p in (
            ("runs", _RUNS_INSERT, {**params, "per_run": per_run}),
            ("spans", _SPANS_INSERT, {**params, "per_run": per_run}),
            ("span_runs", _SPAN_RUNS_INSERT, {**params, "per_run": per_run}),
        ):
            t = time.perf_counter()
            con.execute(sql, p)
            took[name] += time.perf_counter() - t
    print("  INSERT " + ", ".join(f"{k}: {v:.1f} s" for k, v in took.items()), flush=True)
    apply_layout(con, config)  # back to the server's options
    assert add_run_keys(con) == 0  # every run has the key the deriver would have given it
    t = time.perf_counter()
    fill_run_tools(con)  # the rows the deriver writes beside each run
    took["run_tools"] = time.perf_counter() - t
    print(f"  run_tools: {took['run_tools']:.1f} s", flush=True)
    # Mark every span as derived already: the server's run deriver must not redo 10M spans
    # while the benchmark times it (the rows above are what it would have written).
    snapshot = con.execute("SELECT id FROM current_snapshot()").fetchone()
    assert snapshot is not None
    con.execute("INSERT INTO watermarks VALUES ('runs', ?, now())", [snapshot[0]])
    con.close()
    t = time.perf_counter()
    store = Store(settings)
    store.open()
    try:
        merged = compact(store, replace(config, max_seconds=3600.0)).merged
    finally:
        store.close()
    took["compaction"] = time.perf_counter() - t
    print(f"  compaction: {merged} merges in {took['compaction']:.0f} s", flush=True)
    return took
