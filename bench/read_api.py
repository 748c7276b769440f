"""Read API benchmark: a store of `--runs` synthetic runs (~10 spans each, over 30 days), made
with DuckDB `range()` INSERTs, then timed over HTTP on a real `agentledger serve`.

Beside each route's p50/p95 it prints the bare time of the same query functions on the same
data in this process (before the server starts), and EXPLAIN ANALYZE of a route over target.

    python bench/read_api.py --runs 100000          # quick
    python bench/read_api.py                        # 1,000,000 runs, ~10M spans
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.read_data import DAYS, ORG, build  # noqa: E402
from collector.config import ConfigOverrides, load_config  # noqa: E402
from collector.read import metrics as qm  # noqa: E402
from collector.read import runs as qr  # noqa: E402
from collector.read.api import read_overview  # noqa: E402
from collector.read.detail import get_detail  # noqa: E402
from collector.store.lake import StoreSettings  # noqa: E402
from collector.store.query import Window  # noqa: E402
from collector.store.writer import Store  # noqa: E402

KEY = "al_read_0badc0de_" + "0" * 40
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
    settings = StoreSettings.from_config(loaded.storage)
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
