"""MCP capture benchmark: many concurrent clients POST /api/v1/capture-event to a real
`agentledger serve` for a bounded time; prints acknowledged events/s, p50/p99 latency, and
checks afterwards that every acknowledged event_id is in the store.

    python bench/capture.py --seconds 20 --clients 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
KEY = "al_live_0badc0de_" + "0" * 40
CONFIG = """
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:0"}}
storage: {{path: "{data}", commit_interval_ms: {interval}}}
limits: {{decode_workers: 1}}
processors: {{normalise: {{}}, cost: {{}}, runs: {{enabled: {derive}}}}}
auth:
  bootstrap: false
  orgs: [{{name: bench, keys: [{{scope: ingest, key: "{key}"}}]}}]
"""


def event(client: int, i: int) -> dict[str, object]:
    """A call shaped like the doc's example: args, result, one checkpoint, a trace id."""
    return {
        "session_id": f"bench-{client}",
        "primitive_name": ("search_web", "read_file", "fetch_url")[i % 3],
        "primitive_type": "tool",
        "success": i % 17 != 0,
        "latency": 50 + (i * 37) % 400,
        "args": json.dumps({"query": f"question {i}", "limit": 10}),
        "result": json.dumps({"results": [{"title": f"hit {i}", "url": "https://e.x/"}]}),
        "checkpoints": [{"name": "cache_lookup", "timestamp": 5, "metadata": {"rows": "5"}}],
        "metadata": {"trace_id": f"{client:016x}{i:016x}"},
    }


async def drive(base: str, clients: int, seconds: float) -> tuple[list[str], list[float], int]:
    acked: list[str] = []
    latencies: list[float] = []
    refused = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:

        async def one(client: int) -> None:
            nonlocal refused
            i = 0
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                r = await http.post(
                    "/api/v1/capture-event", json=event(client, i), headers={"X-Org-Id": KEY}
                )
                i += 1
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t)
                    acked.append(r.json()["event_id"])
                else:
                    refused += 1
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(one(c) for c in range(clients)))
    return acked, sorted(latencies), refused


def stored_ids(data_dir: str) -> set[str]:
    sys.path.insert(0, str(ROOT))
    from collector.store.lake import StoreSettings, connect

    con = connect(
        StoreSettings(catalog=f"{data_dir}/catalog.ducklake", data_path=f"{data_dir}/data")
    )
    try:
        return {r[0] for r in con.execute("SELECT event_id FROM lake.mcp_events").fetchall()}
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--commit-interval-ms", type=int, default=100, help="storage setting")
    ap.add_argument("--no-derive", action="store_true", help="no run derivation on this node")
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    tmp = tempfile.mkdtemp(prefix="al-capture-")
    data = f"{tmp}/data"
    cfg = Path(tmp) / "bench.yaml"
    cfg.write_text(
        CONFIG.format(
            data=data,
            key=KEY,
            interval=args.commit_interval_ms,
            derive=str(not args.no_derive).lower(),
        )
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
            m = re.match(r"ready: .* api=(\S+)", line)
            if m:
                api = m.group(1)
                break
        if not api:
            sys.exit("the server did not start (run it with this config to see why)")
        base = f"http://{api}"
        probe = httpx.post(f"{base}/api/v1/capture-event", json={})
        if probe.status_code == 404:
            sys.exit("capture-event is not mounted (collector/service.py `_api_routes()`)")
        asyncio.run(drive(base, 4, 1.0))  # warm up connections and the first commits
        started = time.perf_counter()
        acked, lat, refused = asyncio.run(drive(base, args.clients, args.seconds))
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(60)
    stored = stored_ids(data)
    shutil.rmtree(tmp, ignore_errors=True)
    missing = set(acked) - stored

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    print(
        f"clients: {args.clients}, seconds: {args.seconds:g}, "
        f"commit interval: {args.commit_interval_ms} ms, run derivation: "
        f"{'off' if args.no_derive else 'on'}"
    )
    print(
        f"acknowledged capture-event/s: {len(acked) / elapsed:,.0f}   "
        f"({len(acked):,} events in {elapsed:.1f} s, {refused} refused)"
    )
    print(f"request latency p50 {pct(0.5):.0f} ms, p99 {pct(0.99):.0f} ms")
    print(
        f"acknowledged events in the store: {len(acked) - len(missing):,} of {len(acked):,} "
        f"({'all' if not missing else f'{len(missing)} MISSING'})"
    )
    if missing:
        sys.exit(1)


if __name__ == "__main__":
    main()
