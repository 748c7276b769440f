"""Read API benchmark: a store of `--runs` synthetic runs (~10 spans each, over 30 days), made
with DuckDB `range()` INSERTs, then timed over HTTP on a real `agentledger serve`.

Beside each route's p50/p95 it prints the bare time of the same query functions on the same
data in this process (before the server starts), and EXPLAIN ANALYZE of a route over target.

    python bench/read_api.py --runs 100000          # quick
    python bench/read_api.py                        # 1,000,000 runs, ~10M spans
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector import query_metrics as qm  # noqa: E402
from collector import query_runs as qr  # noqa: E402
from collector.compaction import CompactionConfig, apply_layout, compact  # noqa: E402
from collector.config import ConfigOverrides, load_config  # noqa: E402
from collector.dedup import run_key  # noqa: E402
from collector.derive_schema import add_run_keys  # noqa: E402
from collector.model import Signal  # noqa: E402
from collector.query import Window  # noqa: E402
from collector.read_api import read_overview  # noqa: E402
from collector.run_detail import get_detail  # noqa: E402
from collector.schema import DERIVED_TABLES, create_derived_sql, create_table_sql  # noqa: E402
from collector.service import store_settings  # noqa: E402
from collector.store import META_DDL, Store, StoreSettings, connect  # noqa: E402

ORG = "bench"
KEY = "al_read_0badc0de_" + "0" * 40
DAYS = 30
CONFIG = """
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:0"}}
storage: {{path: "{data}"}}
auth:
  bootstrap: false
  orgs: [{{name: {org}, keys: [{{scope: read, key: "{key}"}}]}}]
"""

# Targets of the issue, in ms of p50.
TARGETS = {
    "/api/runs": 150,
    "/api/workflows": 150,
    "/api/runs/{id}": 50,
    "/api/metrics/overview": 300,
}

# -- the data -------------------------------------------------------------------------------

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
    output_excerpt, error_type, service_name, last_span_at, updated_at, run_key)
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
    'agent-service', started + to_milliseconds(dur_ms), now(), k.run_key
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
    """The integer lookup key the deriver gives each run (`collector.dedup.run_key`), for the
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
    server's compaction (`collector/compaction.py`); returns seconds per step."""
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
            ("runs", _RUNS_INSERT, params),
            ("spans", _SPANS_INSERT, {**params, "per_run": per_run}),
            ("span_runs", _SPAN_RUNS_INSERT, {**params, "per_run": per_run}),
        ):
            t = time.perf_counter()
            con.execute(sql, p)
            took[name] += time.perf_counter() - t
    print("  INSERT " + ", ".join(f"{k}: {v:.1f} s" for k, v in took.items()), flush=True)
    apply_layout(con, config)  # back to the server's options
    assert add_run_keys(con) == 0  # every run has the key the deriver would have given it
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


def counts(store: Store) -> dict[str, int]:
    return {
        t: int(store.query(f"SELECT count(*) FROM {t}")[0][0])
        for t in ("runs", "spans", "span_runs")
    }


# -- timing ---------------------------------------------------------------------------------


class TimedStore(Store):
    """A store that records each statement's time while `recording` is set, to show which
    statement of a query function dominates (its own queries and its readers')."""

    recording: list[tuple[str, Any, float]] | None = None

    def _record(self, sql: str, params: Any, started: float) -> None:
        if self.recording is not None:
            self.recording.append((sql, params, time.perf_counter() - started))

    def query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        t = time.perf_counter()
        rows = super().query(sql, params)
        self._record(sql, params, t)
        return rows

    @contextmanager
    def reader(self) -> Iterator[Any]:  # type: ignore[override]
        with super().reader() as r:
            plain = r.query

            def timed(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
                t = time.perf_counter()
                rows = plain(sql, params)
                self._record(sql, params, t)
                return rows

            r.query = timed  # type: ignore[method-assign]
            yield r


def pcts(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s) * 1000, s[max(0, -(-95 * len(s) // 100) - 1)] * 1000


def time_calls(fn: Callable[[int], object], n: int) -> list[float]:
    for i in range(3):  # warm caches and the Parquet metadata, as a running server has them
        fn(i)
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def bare(store: TimedStore, run_ids: list[str], n: int, now: datetime) -> dict[str, Any]:
    window = Window(now - timedelta(days=DAYS), now)
    where = qr.RunFilter(ORG, window)

    def read(fn: Callable[..., object], *args: object) -> object:
        with store.reader() as r:  # as the route reads: all its queries on one snapshot
            return fn(r, *args)

    fns: dict[str, Callable[[int], object]] = {
        "/api/runs": lambda i: read(qr.list_runs, where, "started_at_desc", None, 50),
        "/api/workflows": lambda i: qm.list_workflows(store, ORG, window, "total_cost_desc"),
        "/api/runs/{id}": lambda i: get_detail(store, ORG, run_ids[i % len(run_ids)]),
        "/api/metrics/overview": lambda i: read_overview(store, ORG, window),
    }
    result: dict[str, Any] = {}
    for route, fn in fns.items():
        samples = time_calls(fn, n)
        store.recording = []
        fn(0)
        statements, store.recording = store.recording, None
        result[route] = (pcts(samples), statements)
    return result


def over_http(api: str, run_ids: list[str], n: int) -> dict[str, tuple[float, float]]:
    paths: dict[str, Callable[[int], str]] = {
        "/api/runs": lambda i: "/api/runs",
        "/api/workflows": lambda i: "/api/workflows",
        "/api/runs/{id}": lambda i: f"/api/runs/{run_ids[i % len(run_ids)]}",
        "/api/metrics/overview": lambda i: "/api/metrics/overview",
    }
    out = {}
    # One connection, requests one after another: latency, not throughput. 4 * (n + 3) must
    # stay under the 300 requests/minute a read token may make.
    with httpx.Client(
        base_url=f"http://{api}", timeout=60, headers={"Authorization": f"Bearer {KEY}"}
    ) as c:
        for route, path in paths.items():

            def get(i: int, path: Callable[[int], str] = path) -> None:
                r = c.get(path(i))
                assert r.status_code == 200, f"{path(i)}: {r.status_code} {r.text[:200]}"

            out[route] = pcts(time_calls(get, n))
    return out


def explain(store: Store, statements: list[tuple[str, Any, float]]) -> str:
    # Each statement's first line and time, then the plan of the slowest one.
    lines = [f"  {s[2] * 1000:7.1f} ms  {' '.join(s[0].split())[:90]}" for s in statements]
    sql, params, secs = max(statements, key=lambda s: s[2])
    rows = store.query("EXPLAIN ANALYZE " + sql, params)
    plan = "\n".join(str(r[1]) for r in rows)
    total = sum(s[2] for s in statements) * 1000
    head = "\n".join(lines)
    return f"statements:\n{head}\nslowest ({secs * 1000:.0f} ms of {total:.0f} ms):\n{sql}\n{plan}"


# -- the run --------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            cpu = m.group(1).strip() if m else cpu
        with open("/proc/meminfo") as f:
            m = re.search(r"MemTotal:\s+(\d+)", f.read())
            mem = f", {int(m.group(1)) / 2**20:.0f} GiB RAM" if m else ""
    except OSError:
        mem = ""
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, DuckDB {duckdb.__version__}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--spans-per-run", type=int, default=10)
    ap.add_argument("--requests", type=int, default=30, help="timed requests a route")
    ap.add_argument("--data-dir", type=Path, help="keep the store here (default: a temp dir)")
    ap.add_argument("--spans-row-group-rows", type=int, help="layout test: row groups of spans")
    ap.add_argument(
        "--runs-row-group-rows", type=int, help="layout test: row groups of runs and span_runs"
    )
    ap.add_argument(
        "--reuse", action="store_true", help="time the store already in --data-dir, not a new one"
    )
    args = ap.parse_args()
    if args.reuse and args.data_dir is None:
        ap.error("--reuse needs --data-dir")
    if 4 * (args.requests + 3) > 290:
        ap.error("--requests: at most 69 (a read token may make 300 requests a minute)")

    print(f"machine: {machine()}")
    tmp = Path(tempfile.mkdtemp(prefix="al-read-bench-"))
    data = args.data_dir or tmp / "data"
    cfg = tmp / "bench.yaml"
    cfg.write_text(CONFIG.format(data=data, org=ORG, key=KEY))
    loaded = load_config(cfg, {}, ConfigOverrides())
    settings = store_settings(loaded)
    config = loaded.compaction
    if args.spans_row_group_rows:
        config = replace(config, spans_row_group_rows=args.spans_row_group_rows)
    if args.runs_row_group_rows:
        config = replace(config, runs_row_group_rows=args.runs_row_group_rows)
    now = datetime.now(UTC)
    if args.reuse:
        print(f"timing the store in {data}", flush=True)
    else:
        print(
            f"building {args.runs:,} runs x {args.spans_per_run} spans over {DAYS} days ...",
            flush=True,
        )
        t = time.perf_counter()
        build(settings, args.runs, args.spans_per_run, now, config)
        print(f"  built in {time.perf_counter() - t:.0f} s", flush=True)

    store = TimedStore(settings)
    store.open()
    try:
        rows = counts(store)
        rng = random.Random(3)
        picked = store.query(
            "SELECT run_id FROM runs WHERE org = ? USING SAMPLE reservoir(200 ROWS) REPEATABLE (7)",
            [ORG],
        )
        run_ids = [r[0] for r in picked]
        rng.shuffle(run_ids)
        in_process = bare(store, run_ids, args.requests, datetime.now(UTC))
    finally:
        store.close()
    size = sum(f.stat().st_size for f in Path(data).rglob("*") if f.is_file())
    print(
        "rows: "
        + ", ".join(f"{k} {v:,}" for k, v in rows.items())
        + f"; store {size / 2**20:,.0f} MiB"
    )

    server = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "serve", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        api = ""
        for line in server.stdout:
            m = re.match(r"ready: .*api=(\S+)", line)
            if m:
                api = m.group(1)
                break
        assert api, "the server did not start"
        http = over_http(api, run_ids, args.requests)
    finally:
        server.terminate()
        server.wait(60)

    print(f"\n{args.requests} requests a route, one at a time, after 3 warm-up requests")
    print(
        f"{'route':<24}{'HTTP p50':>10}{'HTTP p95':>10}{'DuckDB p50':>12}{'DuckDB p95':>12}"
        f"{'target p50':>12}"
    )
    missed = []
    for route, (h50, h95) in http.items():
        (b50, b95), statements = in_process[route]
        ok = h50 < TARGETS[route]
        print(
            f"{route:<24}{h50:>8.1f}ms{h95:>8.1f}ms{b50:>10.1f}ms{b95:>10.1f}ms"
            f"{'<' + str(TARGETS[route]) + ' ms':>9} {'ok' if ok else 'MISSED'}"
        )
        if not ok:
            missed.append((route, statements))
    if missed:
        store = TimedStore(settings)
        store.open()
        try:
            for route, statements in missed:
                print(f"\n== {route}: EXPLAIN ANALYZE of its {explain(store, statements)}")
        finally:
            store.close()
    if args.data_dir is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
