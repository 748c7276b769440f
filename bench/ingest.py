"""Ingest benchmark: drives a real `agentledger serve` over OTLP/gRPC and OTLP/HTTP-protobuf.

Realistic agent traces (tests/otlp_factory.py: ~15 attributes a span, 512 spans a request)
from several concurrent clients for a bounded time; prints acknowledged and durable spans/s,
latency percentiles and peak RSS, beside the bare protobuf-parse ceiling measured in this run.

    python bench/ingest.py --seconds 20 --clients 8 --transport grpc
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.otlp_factory import request_of  # noqa: E402

KEY = "al_live_0badc0de_" + "0" * 40
READ = "al_read_0badc0df_" + "0" * 40
CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      http: {{endpoint: "127.0.0.1:0"}}
storage: {{path: "{data}"{storage}}}
limits: {{decode_workers: {workers}, max_queue_items: {queue}}}
auth:
  bootstrap: false
  orgs: [{{name: bench, keys: [{{scope: ingest, key: "{key}"}}, {{scope: read, key: "{read}"}}]}}]
processors: {processors}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: {chain}, exporters: [store]}}
"""


def payloads(count: int, spans: int) -> list[bytes]:
    """`count` requests with distinct trace ids, made by re-keying one template (cheap)."""
    template = request_of(spans, seed=7)
    rng = random.Random(11)
    out = []
    for _ in range(count):
        req = ExportTraceServiceRequest()
        req.CopyFrom(template)
        remap: dict[bytes, bytes] = {}
        for span in req.resource_spans[0].scope_spans[0].spans:
            span.trace_id = remap.setdefault(span.trace_id, rng.randbytes(16))
        out.append(req.SerializeToString())
    return out


def write_config(
    tmp: str,
    *,
    workers: int = 2,
    normalise: bool = True,
    derive: bool = True,
    redact: bool = False,
    extra: str = "",
    queue: int = 200_000,
    storage: str = "",
) -> Path:
    """The server's config file in `tmp` (data under `tmp`/data): the ingest and read keys, the
    processors asked for."""
    chain = "[normalise, cost]" if normalise else "[]"
    runs = f"runs: {{enabled: {str(derive).lower()}}}"
    procs = f"{{normalise: {{}}, cost: {{}}, {runs}}}" if normalise else f"{{{runs}}}"
    if redact:
        chain = "[redact" + (", normalise, cost]" if normalise else "]")
        procs = "{redact: {blocked_keys: ['*password*']}, " + procs[1:]
    cfg = Path(tmp) / "bench.yaml"
    cfg.write_text(
        CONFIG.format(
            data=f"{tmp}/data",
            workers=workers,
            key=KEY,
            read=READ,
            queue=queue,
            processors=procs,
            chain=chain,
            storage=f", {storage}" if storage else "",
        )
        + extra
    )
    return cfg


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (the server and its decode workers), from /proc."""
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return pids


def start_server(cfg: Path) -> tuple[subprocess.Popen[str], str, str]:
    """`agentledger serve` on `cfg` once it is ready: (process, gRPC and HTTP host:port)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "serve", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert server.stdout is not None
    for line in server.stdout:
        if line.startswith("ready:"):
            grpc_ep = re.search(r"grpc=(\S+)", line)
            http_ep = re.search(r"http=(\S+)", line)
            assert grpc_ep and http_ep, line
            return server, grpc_ep.group(1), http_ep.group(1)
    server.kill()
    raise RuntimeError("the server exited before it was ready")


def parse_ceiling(data: list[bytes], spans: int) -> float:
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < 2.0:
        ExportTraceServiceRequest().ParseFromString(data[n % len(data)])
        n += 1
    return n * spans / (time.perf_counter() - start)


def tree_peak_rss_mib(pid: int) -> float:
    """Peak RSS (VmHWM) of the server and its decode workers, summed."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
                total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total / 1024


async def drive(transport: str, target: str, data: list[bytes], clients: int, seconds: float):
    latencies: list[float] = []
    acked = 0
    refused = 0
    idx = 0
    deadline = time.perf_counter() + seconds

    def next_payload() -> bytes | None:
        nonlocal idx
        if idx >= len(data):
            return None
        idx += 1
        return data[idx - 1]

    async def grpc_client() -> None:
        nonlocal acked, refused
        async with grpc.aio.insecure_channel(target) as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=None,
                response_deserializer=None,
            )
            while time.perf_counter() < deadline and (p := next_payload()) is not None:
                t = time.perf_counter()
                try:
                    await export(p, metadata=(("authorization", f"Bearer {KEY}"),), timeout=30)
                    acked += SPANS
                    latencies.append(time.perf_counter() - t)
                except grpc.aio.AioRpcError:
                    refused += 1
                    await asyncio.sleep(0.05)

    async def http_client() -> None:
        nonlocal acked, refused
        async with httpx.AsyncClient(timeout=30) as client:
            while time.perf_counter() < deadline and (p := next_payload()) is not None:
                t = time.perf_counter()
                r = await client.post(
                    f"http://{target}/v1/traces",
                    content=p,
                    headers={
                        "content-type": "application/x-protobuf",
                        "authorization": f"Bearer {KEY}",
                    },
                )
                if r.status_code == 200:
                    acked += SPANS
                    latencies.append(time.perf_counter() - t)
                else:
                    refused += 1
                    await asyncio.sleep(0.05)

    start = time.perf_counter()
    fn = grpc_client if transport == "grpc" else http_client
    await asyncio.gather(*(fn() for _ in range(clients)))
    return acked, refused, time.perf_counter() - start, sorted(latencies)


SPANS = 512


def derivation_lag(http_ep: str, runs: int, limit_s: float = 600) -> float:
    """Seconds until /api/runs counts every run of the load (8-span traces)."""
    start = time.perf_counter()
    with httpx.Client(timeout=30) as client:
        while time.perf_counter() - start < limit_s:
            r = client.get(
                f"http://{http_ep}/api/runs",
                params={"from": "2000-01-01T00:00:00Z", "limit": 1},
                headers={"authorization": f"Bearer {READ}"},
            )
            if r.status_code == 200 and r.json()["total_count"] >= runs:
                return time.perf_counter() - start
            time.sleep(0.5)
    return float("nan")


def count_rows(data_dir: str) -> int:
    from collector.store.lake import StoreSettings, connect

    con = connect(
        StoreSettings(catalog=f"{data_dir}/catalog.ducklake", data_path=f"{data_dir}/data/")
    )
    return int(con.execute("SELECT count(*) FROM lake.spans").fetchone()[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--transport", choices=["grpc", "http"], default="grpc")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-normalise", action="store_true", help="store only, no processors")
    ap.add_argument(
        "--redact", action="store_true", help="run the redact processor (all detectors) first"
    )
    ap.add_argument(
        "--config-extra", default="", help="YAML appended to the server's config (A/B runs)"
    )
    ap.add_argument("--no-derive", action="store_true", help="no run derivation on this node")
    ap.add_argument("--requests", type=int, default=0, help="payloads to prepare (default: enough)")
    args = ap.parse_args()

    n_req = args.requests or int(args.seconds * 160) + 50  # room for ~80k spans/s
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"preparing {n_req} requests of {SPANS} spans ...", flush=True)
    data = payloads(n_req, SPANS)
    print(f"bytes a span: {len(data[0]) / SPANS:.0f}")
    ceiling = parse_ceiling(data, SPANS)

    tmp = tempfile.mkdtemp(prefix="al-bench-")
    cfg = write_config(
        tmp,
        workers=args.workers,
        normalise=not args.no_normalise,
        derive=not args.no_derive,
        redact=args.redact,
        extra=args.config_extra,
    )
    server, grpc_ep, http_ep = start_server(cfg)
    try:
        target = grpc_ep if args.transport == "grpc" else http_ep
        # Warm the decode workers (spawned lazily) before timing.
        asyncio.run(drive(args.transport, target, data[:8], 2, 30))
        acked, refused, elapsed, lat = asyncio.run(
            drive(args.transport, target, data[8:], args.clients, args.seconds)
        )
        rss = tree_peak_rss_mib(server.pid)
        lag = None if args.no_derive else derivation_lag(http_ep, (acked + 8 * SPANS) // 8)
    finally:
        server.terminate()
        server.wait(60)
    durable = count_rows(f"{tmp}/data") - 8 * SPANS
    shutil.rmtree(tmp, ignore_errors=True)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    rate = acked / elapsed
    print(
        f"transport: {args.transport}, clients: {args.clients}, decode workers: {args.workers}, "
        f"normalise+cost: {'off' if args.no_normalise else 'on'}, "
        f"redact: {'on' if args.redact else 'off'}"
    )
    print(
        f"acknowledged spans/s: {rate:,.0f}   ({acked:,} spans in {elapsed:.1f}s, "
        f"{refused} requests refused for backpressure)"
    )
    print(
        f"durable spans in store: {durable:,}  (acknowledged {acked:,}: "
        f"{'equal' if durable == acked else 'MISMATCH'})"
    )
    print(f"request latency p50 {pct(0.5):.0f} ms, p99 {pct(0.99):.0f} ms")
    print(f"peak RSS (server + workers): {rss:,.0f} MiB")
    if lag is not None:
        print(
            f"run derivation caught up {lag:.1f}s after the load ended "
            f"(all {(acked + 8 * SPANS) // 8:,} runs visible in /api/runs)"
        )
    print(
        f"ceiling, bare protobuf parse on one core: {ceiling:,.0f} spans/s "
        f"→ ingest is {rate / ceiling:.1%} of it"
    )


if __name__ == "__main__":
    main()
