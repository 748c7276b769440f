"""What DuckDB's thread count (`storage.threads`) costs the store's commits and `spans` merges, in
wall time and in CPU time of the process, on this machine.

For each setting, in turn and in rounds: a fresh store in this process, `--commits` group commits
of one decoded 512-span OTLP request each (bench/ingest.py's payloads, normalise off), then the
server's own compaction over the small files they left. CPU is this process's user + system time.

    python bench/merge_threads.py                  # 200 commits, threads 1 and 2, two rounds
    python bench/merge_threads.py --commits 60 --rounds 1   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import SPANS, payloads  # noqa: E402
from collector.governance import compaction  # noqa: E402
from collector.governance.compaction import CompactionConfig  # noqa: E402
from collector.model import Rows, Signal  # noqa: E402
from collector.pipeline import process_payload  # noqa: E402
from collector.store.lake import StoreSettings  # noqa: E402
from collector.store.writer import Store  # noqa: E402


def cpu_s() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def one(threads: int, batches: list[pa.Table], tmp: str) -> dict[str, float]:
    """Commits, then compaction, on a fresh store with DuckDB at `threads`: wall and CPU of each."""
    store = Store(StoreSettings(f"{tmp}/catalog.ducklake", f"{tmp}/data/", threads=threads))
    store.open()
    try:
        loop = asyncio.new_event_loop()
        wall, cpu = time.perf_counter(), cpu_s()
        for table in batches:
            loop.run_until_complete(store.append(Rows(Signal.TRACES, "bench", table)))
        commit_wall, commit_cpu = time.perf_counter() - wall, cpu_s() - cpu
        loop.close()
        config = CompactionConfig(max_seconds=3600)
        compaction.prepare(store, config)
        wall, cpu = time.perf_counter(), cpu_s()
        result = compaction.compact(store, config)
        merge_wall, merge_cpu = time.perf_counter() - wall, cpu_s() - cpu
        spans = int(store.query("SELECT count(*) FROM spans")[0][0])
        assert spans == len(batches) * SPANS, spans
    finally:
        store.close()
    return {
        "commit_wall": commit_wall,
        "commit_cpu": commit_cpu,
        "merge_wall": merge_wall,
        "merge_cpu": merge_cpu,
        "merges": float(sum(result.merged.values())),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=200, help="one 512-span request a commit")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", default="1,2", help="DuckDB thread counts to compare")
    args = ap.parse_args()
    settings = [int(t) for t in args.threads.split(",")]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average {os.getloadavg()[0]:.1f}"
    )
    batches = [
        process_payload(Signal.TRACES, "bench", p, "protobuf", {})[0]
        for p in payloads(args.commits, SPANS)
    ]
    found: dict[int, list[dict[str, float]]] = {t: [] for t in settings}
    for r in range(args.rounds):
        for t in settings if r % 2 == 0 else reversed(settings):
            with tempfile.TemporaryDirectory(prefix="al-bench-threads-") as tmp:
                found[t].append(one(t, batches, tmp))
            m = found[t][-1]
            print(
                f"round {r + 1}, threads {t}: {args.commits} commits {m['commit_wall']:.2f} s "
                f"(CPU {m['commit_cpu']:.2f} s); compaction {m['merge_wall']:.2f} s "
                f"(CPU {m['merge_cpu']:.2f} s, {m['merges']:.0f} merges)",
                flush=True,
            )
    keys = ("commit_wall", "commit_cpu", "merge_wall", "merge_cpu")

    def med(t: int, key: str) -> float:
        return statistics.median(m[key] for m in found[t])

    print(f"\nmedians over {args.rounds} round(s), {args.commits * SPANS:,} spans:")
    print(f"{'threads':>7}" + "".join(f"{k.replace('_', ' '):>13}" for k in keys))
    for t in settings:
        print(f"{t:>7}" + "".join(f"{med(t, k):>11.2f} s" for k in keys))
    if len(settings) == 2:
        a, b = settings
        for key in keys[1:]:
            ratio = med(b, key) / med(a, key)
            print(f"{key.replace('_', ' ')}: threads {b} / threads {a} = {ratio:.2f}x")


if __name__ == "__main__":
    main()
