"""Memory benchmark: peak and settled RSS of a real `agentledger serve` (server + decode workers)
under the payloads that blew it up in issue 20, with the answers the server gave.

Scenarios (each on a fresh server, default processors and run derivation on, 2 workers):
  names     24 valid requests, one span each with a 20 MiB name, 6 at a time (OTLP/HTTP)
  attrs     one span with 200,000 attributes
  tiny      a 60 MiB request of minimal spans (about 2 million), the most rows per byte
  bigattrs  16 requests of 8 spans with a 4 MiB attribute each, 8 at a time
  grpc      the `names` payloads over OTLP/gRPC

    python bench/memory.py                      # every scenario
    python bench/memory.py --scenario names --scenario attrs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import process_tree, start_server  # noqa: E402
from tests.otlp_factory import kv  # noqa: E402

KEY = "al_live_0badc0de_" + "0" * 40
CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      http: {{endpoint: "127.0.0.1:0"}}
storage: {{path: "{data}"}}
limits: {{decode_workers: 2}}
auth:
  bootstrap: false
  orgs: [{{name: bench, keys: [{{scope: ingest, key: "{key}"}}]}}]
"""
MIB = 1024 * 1024


def status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(rf"{field}:\s+(\d+) kB", f.read())
    except OSError:
        return 0
    return int(m.group(1)) if m else 0


def tree_rss_mib(pid: int) -> float:
    return sum(status_kib(p, "VmRSS") for p in process_tree(pid)) / 1024


class Sampler:
    """Samples the RSS of the server and its workers, summed, every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self.per_pid: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, tree_rss_mib(self.pid))
            for p in process_tree(self.pid):
                self.per_pid[p] = max(self.per_pid.get(p, 0), status_kib(p, "VmRSS") // 1024)

    def __enter__(self) -> Sampler:
        self.peak = tree_rss_mib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one_span_request(seed: int, name: str = "x", attributes: int = 0) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "memory-bench"))
    span = rs.scope_spans.add().spans.add(
        trace_id=(seed + 1).to_bytes(16, "big"),
        span_id=(seed + 1).to_bytes(8, "big"),
        name=name,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_001_000_000_000,
    )
    span.attributes.extend(kv(f"attr.{i}", i) for i in range(attributes))
    return req.SerializeToString()


def tiny_spans_request(mib: int) -> bytes:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    n = mib * MIB // 30  # a span with only its ids is ~30 bytes on the wire
    for i in range(n):
        spans.add(trace_id=(i // 8 + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"))
    return req.SerializeToString()


def big_attribute_request(seed: int, spans: int, value_mib: int) -> bytes:
    req = ExportTraceServiceRequest()
    out = req.resource_spans.add().scope_spans.add().spans
    for i in range(spans):
        span = out.add(
            trace_id=(seed + 1).to_bytes(16, "big"),
            span_id=(seed * 100 + i + 1).to_bytes(8, "big"),
            name="chat gpt-4o",
        )
        span.attributes.extend(
            [
                kv("gen_ai.operation.name", "chat"),
                kv("gen_ai.request.model", "gpt-4o"),
                kv("gen_ai.input.messages", os.urandom(value_mib * MIB // 2).hex()),
            ]
        )
    return req.SerializeToString()


@dataclass
class Scenario:
    what: str
    bodies: Callable[[], list[bytes]]
    concurrency: int
    transport: str = "http"


SCENARIOS = {
    "names": Scenario(
        "24 requests, one span with a 20 MiB name each, 6 at a time",
        lambda: [one_span_request(i, name="n" * (20 * MIB)) for i in range(24)],
        6,
    ),
    "attrs": Scenario(
        "one span with 200,000 attributes",
        lambda: [one_span_request(0, attributes=200_000)],
        1,
    ),
    "tiny": Scenario("one 60 MiB request of minimal spans", lambda: [tiny_spans_request(60)], 1),
    "bigattrs": Scenario(
        "16 requests of 8 spans with a 4 MiB attribute each, 8 at a time",
        lambda: [big_attribute_request(i, 8, 4) for i in range(16)],
        8,
    ),
    "grpc": Scenario(
        "24 requests, one span with a 20 MiB name each, 6 at a time, over gRPC",
        lambda: [one_span_request(i, name="n" * (20 * MIB)) for i in range(24)],
        6,
        "grpc",
    ),
}


async def send_http(url: str, bodies: list[bytes], concurrency: int) -> Counter[str]:
    answers: Counter[str] = Counter()
    todo = list(bodies)
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {KEY}"}

    async def client() -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            while todo:
                body = todo.pop()
                try:
                    r = await http.post(f"{url}/v1/traces", content=body, headers=headers)
                    answers[str(r.status_code)] += 1
                except httpx.HTTPError as e:
                    answers[type(e).__name__] += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return answers


async def send_grpc(target: str, bodies: list[bytes], concurrency: int) -> Counter[str]:
    answers: Counter[str] = Counter()
    todo = list(bodies)
    options = [("grpc.max_send_message_length", 128 * MIB)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=None,
        )

        async def client() -> None:
            while todo:
                body = todo.pop()
                try:
                    await export(body, metadata=(("authorization", f"Bearer {KEY}"),), timeout=120)
                    answers["OK"] += 1
                except grpc.aio.AioRpcError as e:
                    answers[e.code().name] += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return answers


def run(name: str, scenario: Scenario, settle_s: float) -> None:
    bodies = scenario.bodies()
    tmp = tempfile.mkdtemp(prefix="al-membench-")
    cfg = Path(tmp) / "bench.yaml"
    cfg.write_text(CONFIG.format(data=f"{tmp}/data", key=KEY))
    server, grpc_ep, http_ep = start_server(cfg)
    try:
        # Spawn both decode workers before the baseline is taken.
        asyncio.run(
            send_http(f"http://{http_ep}", [one_span_request(10**6 + i) for i in range(4)], 4)
        )
        time.sleep(1.0)
        before = tree_rss_mib(server.pid)
        started = time.perf_counter()
        with Sampler(server.pid) as sampler:
            if scenario.transport == "grpc":
                answers = asyncio.run(send_grpc(grpc_ep, bodies, scenario.concurrency))
            else:
                answers = asyncio.run(send_http(f"http://{http_ep}", bodies, scenario.concurrency))
            elapsed = time.perf_counter() - started
            time.sleep(settle_s)
        after = tree_rss_mib(server.pid)
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(120)
        shutil.rmtree(tmp, ignore_errors=True)
    sent = sum(len(b) for b in bodies) / MIB
    print(
        f"{name:9s} {scenario.what}\n"
        f"          sent {sent:,.0f} MiB in {elapsed:.1f} s; answers {dict(answers)}; "
        f"server alive: {alive}\n"
        f"          RSS (server + workers): before {before:,.0f} MiB, "
        f"peak {sampler.peak:,.0f} MiB, "
        f"{settle_s:.0f} s after {after:,.0f} MiB",
        flush=True,
    )
    print("          peak by process (MiB):", sampler.per_pid)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    ap.add_argument("--settle", type=float, default=5.0, help="seconds before the 'after' RSS")
    args = ap.parse_args()
    for name in args.scenario or list(SCENARIOS):
        run(name, SCENARIOS[name], args.settle)


if __name__ == "__main__":
    main()
