"""Cluster benchmark: the shared store (DuckLake catalog in PostgreSQL, data in S3) against the
single-node file store, in the same run, on this machine.

Starts its own PostgreSQL 15 (initdb as the postgres user) and S3 endpoint (moto_server), then
measures: OTLP ingest through real `agentledger serve` nodes (file store; shared store with one
node; shared store with two nodes sharing the clients), the commit latency of the store (p50/p99
of small group commits; two processes committing concurrently, with their conflicts), and the
failover time after kill -9 of the node holding run derivation. Prints one table per part.

    python bench/cluster.py --seconds 15 --clients 4
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.store.lake import StoreSettings  # noqa: E402
from collector.store.writer import Store  # noqa: E402
from tests.cluster import PostgresServer, S3Server, SharedStore  # noqa: E402
from tests.e2e.server import agentledger_command  # noqa: E402
from tests.otlp_factory import request_of  # noqa: E402

KEY = "al_live_0badc0de_" + "0" * 40
SECRET_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
SPANS = 512
CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      http: {{endpoint: "127.0.0.1:0"}}
storage: {{path: "{data}"{storage}}}
limits: {{decode_workers: 1}}
secrets: {{key: "{secret}"}}
cluster: {{lease_s: {lease}, node_id: "{node}"}}
auth:
  bootstrap: false
  orgs: [{{name: bench, keys: [{{scope: ingest, key: "{key}"}}]}}]
"""


def payloads(count: int, seed: int) -> list[bytes]:
    template = request_of(SPANS, seed=7)
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        req = ExportTraceServiceRequest()
        req.CopyFrom(template)
        remap: dict[bytes, bytes] = {}
        for span in req.resource_spans[0].scope_spans[0].spans:
            span.trace_id = remap.setdefault(span.trace_id, rng.randbytes(16))
        out.append(req.SerializeToString())
    return out


class Node:
    def __init__(self, folder: Path, storage: str, name: str, lease_s: int = 10) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "config.yaml"
        self.config.write_text(
            CONFIG.format(
                data=folder / "data",
                storage=storage,
                secret=SECRET_KEY,
                lease=lease_s,
                node=name,
                key=KEY,
            )
        )
        self.proc = subprocess.Popen(
            [*agentledger_command(), "serve", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=folder,
        )
        self.http = ""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in self.proc.stdout:
            m = re.match(r"ready: grpc=(\S+) http=(\S+)", line)
            if m:
                self.http = m.group(2)
                break
            if time.monotonic() > deadline:
                break
        if not self.http:
            self.proc.kill()
            raise RuntimeError("node did not start")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def health(self) -> dict[str, object]:
        return dict(httpx.get(f"http://{self.http}/health", timeout=10).json())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def drive(targets: list[str], data: list[bytes], clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads, spread over `targets`, posting requests for `seconds`."""
    lock = threading.Lock()
    latencies: list[float] = []
    acked = refused = 0
    idx = 0
    deadline = time.perf_counter() + seconds

    def client(target: str) -> None:
        nonlocal acked, refused, idx
        with httpx.Client(timeout=60) as http:
            while time.perf_counter() < deadline:
                with lock:
                    if idx >= len(data):
                        return
                    body = data[idx]
                    idx += 1
                t = time.perf_counter()
                r = http.post(
                    f"http://{target}/v1/traces",
                    content=body,
                    headers={
                        "content-type": "application/x-protobuf",
                        "authorization": f"Bearer {KEY}",
                    },
                )
                with lock:
                    if r.status_code == 200:
                        acked += SPANS
                        latencies.append(time.perf_counter() - t)
                    else:
                        refused += 1
                if r.status_code != 200:
                    time.sleep(0.05)

    started = time.perf_counter()
    threads = [
        threading.Thread(target=client, args=(targets[i % len(targets)],)) for i in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "spans_s": acked / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
        "refused": float(refused),
    }


def ingest(shared: SharedStore, tmp: Path, seconds: float, clients: int) -> None:
    data = payloads(int(seconds * 200), seed=1)
    print(f"\n## Ingest: OTLP/HTTP, {SPANS} spans a request, {clients} clients, {seconds:g} s")
    print("| store | nodes | acked spans/s | request p50 ms | p99 ms | ratio to file |")
    print("|---|---|---|---|---|---|")
    base = 0.0
    for label, storage, nodes in (
        ("DuckDB file + local folder", "", 1),
        ("PostgreSQL + S3", ", " + shared.storage_yaml(), 1),
        ("PostgreSQL + S3", ", " + shared.storage_yaml(), 2),
    ):
        started = [Node(tmp / f"{label[:4]}-{nodes}-{i}", storage, f"n{i}") for i in range(nodes)]
        try:
            r = drive([n.http for n in started], data, clients, seconds)
        finally:
            for n in started:
                n.stop()
        base = base or r["spans_s"]
        print(
            f"| {label} | {nodes} | {r['spans_s']:,.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} "
            f"| {r['spans_s'] / base:.2f} |"
        )


def _commits(settings: StoreSettings, n: int, rows: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = Store(settings)
    store.open()
    store.call(lambda cur: cur.execute("CREATE TABLE IF NOT EXISTS bench (a BIGINT, b VARCHAR)"))
    times = []
    started = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        store.call(
            lambda cur, i=i: cur.execute(
                "INSERT INTO bench SELECT range + ?, 'x' FROM range(?)", [i * rows, rows]
            )
        )
        times.append(time.perf_counter() - t)
    out.put((times, time.perf_counter() - started, store.stats.commit_conflicts))
    store.close()


def commit_latency(shared: SharedStore, tmp: Path, commits: int) -> None:
    print(f"\n## Commit latency: {commits} commits a process")
    print("| store | rows a commit | processes | p50 ms | p99 ms | commits/s (all) | conflicts |")
    print("|---|---|---|---|---|---|---|")
    ctx = multiprocessing.get_context("spawn")
    file_store = StoreSettings(str(tmp / "c.ducklake"), str(tmp / "cd/"))
    # 1 row is inlined in the catalog (no Parquet file): the catalog's own cost per commit;
    # 1,000 rows write one Parquet file a commit (to S3 on the shared store).
    for label, settings, rows, procs in (
        ("DuckDB file + local folder", file_store, 1, 1),
        ("DuckDB file + local folder", file_store, 1000, 1),
        ("PostgreSQL + S3", shared.settings(), 1, 1),
        ("PostgreSQL + S3", shared.settings(), 1000, 1),
        ("PostgreSQL + S3", shared.settings(), 1000, 2),
    ):
        out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
        workers = [
            ctx.Process(target=_commits, args=(settings, commits, rows, out)) for _ in range(procs)
        ]
        for w in workers:
            w.start()
        results = [out.get() for _ in workers]
        for w in workers:
            w.join()
        times = sorted(t for r in results for t in r[0])
        rate = len(times) / max(r[1] for r in results)
        conflicts = sum(r[2] for r in results)
        p50, p99 = 1000 * statistics.median(times), 1000 * times[int(len(times) * 0.99)]
        print(
            f"| {label} | {rows:,} | {procs} | {p50:.1f} | {p99:.1f} | {rate:.0f} | {conflicts} |"
        )


def object_store(shared: SharedStore) -> None:
    """Throughput of Parquet files written to and read from the bucket through httpfs."""
    import duckdb

    from collector.store.lake import HTTPFS_EXTENSION, extension_path, s3_secret_sql

    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    con.execute(f"LOAD '{extension_path(*HTTPFS_EXTENSION)}'")
    con.execute(s3_secret_sql(shared.s3.s3_config()))
    con.execute("CREATE TABLE t AS SELECT range AS a, md5(range::VARCHAR) AS b FROM range(2000000)")
    url = f"s3://{shared.bucket}/bench/t.parquet"
    t = time.perf_counter()
    con.execute(f"COPY t TO '{url}' (FORMAT parquet)")
    put = time.perf_counter() - t
    size = con.execute(f"SELECT sum(total_compressed_size) FROM parquet_metadata('{url}')")
    mib = float(size.fetchone()[0]) / 2**20  # type: ignore[index]
    t = time.perf_counter()
    con.execute(f"SELECT count(*), max(b) FROM '{url}'").fetchall()
    get = time.perf_counter() - t
    print("\n## Object store (moto_server on this machine, through DuckDB's httpfs)")
    print("| Parquet file | write MiB/s | read MiB/s |\n|---|---|---|")
    print(f"| {mib:.0f} MiB | {mib / put:.0f} | {mib / get:.0f} |")
    con.close()


def failover(shared: SharedStore, tmp: Path, lease_s: int) -> None:
    print(f"\n## Failover: kill -9 of the node holding run derivation (cluster.lease_s {lease_s})")
    nodes = [
        Node(tmp / f"fail-{i}", ", " + shared.storage_yaml(), f"f{i}", lease_s) for i in range(2)
    ]
    try:
        holder = None
        deadline = time.monotonic() + 60
        while holder is None and time.monotonic() < deadline:
            holder = next((n for n in nodes if "runs" in n.health().get("jobs", [])), None)  # type: ignore[operator]
            time.sleep(0.2)
        assert holder is not None
        survivor = next(n for n in nodes if n is not holder)
        holder.proc.kill()
        killed = time.monotonic()
        while "runs" not in survivor.health().get("jobs", []):  # type: ignore[operator]
            time.sleep(0.05)
        took = time.monotonic() - killed
        print("| lease_s | takeover after kill -9 (s) |\n|---|---|")
        print(f"| {lease_s} | {took:.2f} |")
    finally:
        for n in nodes:
            n.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--commits", type=int, default=100)
    p.add_argument("--lease", type=int, default=5)
    p.add_argument("--parts", nargs="*", default=["ingest", "commit", "s3", "failover"])
    args = p.parse_args()
    postgres, s3 = PostgresServer(fsync=True), S3Server()  # durable commits, as in production
    try:
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)

            def fresh() -> SharedStore:
                return SharedStore(postgres, s3, postgres.create_database(), s3.bucket())

            print(f"agentledger cluster benchmark, {multiprocessing.cpu_count()} cores")
            if "ingest" in args.parts:
                ingest(fresh(), tmp / "ingest", args.seconds, args.clients)
            if "commit" in args.parts:
                commit_latency(fresh(), tmp / "commit", args.commits)
            if "s3" in args.parts:
                object_store(fresh())
            if "failover" in args.parts:
                failover(fresh(), tmp / "failover", args.lease)
    finally:
        s3.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
