"""Compaction benchmark: the core ingest benchmark's store, a trace lookup before and after
compaction, and the commit stall that compaction causes while ingest goes on.

Builds the store with a real `agentledger serve` driven over OTLP/gRPC (bench/ingest.py's load,
normalise off, derivation off), stops it, then in this process: times trace lookups (all spans of
one trace_id for the org), appends at a steady rate while compacting and times those commits.

    python bench/compaction.py --seconds 20          # the lead's full run
    python bench/compaction.py --seconds 3 --lookups 20   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import SPANS, drive, payloads, start_server, write_config  # noqa: E402
from collector.governance import compaction  # noqa: E402
from collector.governance.compaction import CompactionConfig  # noqa: E402
from collector.model import Signal  # noqa: E402
from collector.pipeline import process_payload  # noqa: E402
from collector.store.lake import StoreSettings  # noqa: E402
from collector.store.writer import Store  # noqa: E402


def build(tmp: str, seconds: float, workers: int) -> list[bytes]:
    data = payloads(int(seconds * 160) + 50, SPANS)
    cfg = write_config(
        tmp, workers=workers, normalise=False, derive=False, extra="compaction: {enabled: false}\n"
    )
    server, target, _ = start_server(cfg)
    try:
        acked, _, elapsed, _ = asyncio.run(drive("grpc", target, data, 8, seconds))
        print(f"built: {acked:,} spans acknowledged in {elapsed:.1f}s", flush=True)
    finally:
        server.terminate()
        server.wait(120)
    return data


def lookups(store: Store, traces: list[str], n: int) -> list[float]:
    times = []
    for trace in random.Random(3).sample(traces, min(n, len(traces))):
        t = time.perf_counter()
        rows = store.query("SELECT * FROM spans WHERE org = 'bench' AND trace_id = ?", [trace])
        times.append((time.perf_counter() - t) * 1000)
        assert rows, trace
    return sorted(times)


def commits_while(store: Store, data: list[bytes], work: object, rate_hz: float) -> list[float]:
    """Append one request every 1/rate_hz s while `work()` runs; each append's wall time (ms)."""
    batches = [process_payload(Signal.TRACES, "bench", p, "protobuf", {})[0] for p in data[:64]]
    stop = threading.Event()
    times: list[float] = []

    def ingest() -> None:
        from collector.model import Rows

        loop = asyncio.new_event_loop()
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            table = batches[i % len(batches)]
            loop.run_until_complete(store.append(Rows(Signal.TRACES, "bench", table)))
            times.append((time.perf_counter() - t) * 1000)
            i += 1
            time.sleep(max(0.0, 1 / rate_hz - (time.perf_counter() - t)))
        loop.close()

    thread = threading.Thread(target=ingest)
    thread.start()
    try:
        work()  # type: ignore[operator]
    finally:
        stop.set()
        thread.join()
    return sorted(times)


LIVE_FILES = (
    "SELECT count(*) FROM __ducklake_metadata_lake.ducklake_data_file WHERE end_snapshot IS NULL"
)


def pct(v: list[float], p: float) -> float:
    return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20, help="ingest load that builds the store")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lookups", type=int, default=100)
    ap.add_argument("--rate", type=float, default=10, help="appends a second during the stall test")
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    tmp = tempfile.mkdtemp(prefix="al-bench-compaction-")
    try:
        data = build(tmp, args.seconds, args.workers)
        store = Store(StoreSettings(f"{tmp}/data/catalog.ducklake", f"{tmp}/data/data/"))
        store.open()
        try:
            run(store, data, args)
        finally:
            store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(store: Store, data: list[bytes], args: argparse.Namespace) -> None:
    files = store.query(LIVE_FILES)[0][0]
    count = store.query("SELECT count(*) FROM spans")[0][0]
    traces = [r[0] for r in store.query("SELECT DISTINCT trace_id FROM spans USING SAMPLE 2000")]
    before = lookups(store, traces, args.lookups)
    print(f"store: {count:,} spans in {files} data files")
    print(f"trace lookup before: p50 {pct(before, 0.5):.1f} ms, p95 {pct(before, 0.95):.1f} ms")

    baseline = commits_while(store, data, lambda: time.sleep(5), args.rate)
    config = CompactionConfig(max_seconds=3600)
    holder: dict[str, object] = {}

    def work() -> None:
        started = time.perf_counter()
        compaction.prepare(store, config)
        holder["result"] = compaction.compact(store, config)
        compaction.reclaim(store, required=(), grace_s=0)
        holder["seconds"] = time.perf_counter() - started

    during = commits_while(store, data, work, args.rate)
    result = holder["result"]
    after = lookups(store, traces, args.lookups)
    files_after = store.query(LIVE_FILES)[0][0]
    print(f"compaction: {holder['seconds']:.1f}s, {result}; data files {files} → {files_after}")
    for name, v in (("baseline", baseline), ("during compaction", during)):
        print(
            f"commit of one {SPANS}-span request, {name}: p50 {pct(v, 0.5):.0f} ms, "
            f"p99 {pct(v, 0.99):.0f} ms, max {max(v):.0f} ms ({len(v)} commits)"
        )
    stall = pct(during, 0.99) / pct(baseline, 0.99)
    print(f"commit stall ratio (p99 during / p99 baseline): {stall:.2f}")
    print(f"trace lookup after: p50 {pct(after, .5):.1f} ms, p95 {pct(after, .95):.1f} ms "
          f"(target < 50 ms: {'met' if pct(after, .5) < 50 else 'missed'})")  # fmt: skip
    speedup = statistics.median(before) / statistics.median(after)
    print(f"lookup speed-up (p50 before / after): {speedup:.1f}x")


if __name__ == "__main__":
    main()
