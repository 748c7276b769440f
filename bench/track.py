"""ROI tracking benchmark: 50 concurrent clients POST /v1/track to a real `agentledger serve`.

Prints acknowledged events/s and latency percentiles, then stops the server and checks that
every acknowledged event id is in the store (an ack means durable).

    python bench/track.py --seconds 15 --clients 50
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.store.lake import StoreSettings, connect  # noqa: E402

KEY = "al_live_0badc0de_" + "0" * 40
ADMIN = "al_admin_0badc0dd_" + "0" * 40
CONFIG = """
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:0"}}
storage: {{path: "{data}"}}
auth:
  bootstrap: false
  orgs: [{{name: bench, keys: [{{scope: ingest, key: "{key}"}}, {{scope: admin, key: "{admin}"}}]}}]
"""


async def client(
    base: str, until: float, latencies: list[float], acked: list[str], keyed: bool
) -> None:
    body = {
        "agent_id": "bench-agent",
        "task_type": "ticket_triage",
        "outcome": "success",
        "agent_duration_seconds": 3.2,
        "model": "openai/gpt-4o-mini",
        "tokens_in": 1200,
        "tokens_out": 300,
        "metadata": {"team": "support"},
    }
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        while time.monotonic() < until:
            headers = {"Authorization": f"Bearer {KEY}"}
            if keyed:
                headers["Idempotency-Key"] = str(uuid.uuid4())
            t0 = time.perf_counter()
            r = await c.post("/v1/track", json=body, headers=headers)
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 201:
                raise RuntimeError(f"{r.status_code}: {r.text}")
            acked.append(r.json()["event_id"])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--no-idempotency-key", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        cfg = Path(tmp) / "bench.yaml"
        cfg.write_text(CONFIG.format(data=data, key=KEY, admin=ADMIN))
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "serve", "--config", str(cfg)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        )  # fmt: skip
        assert proc.stdout is not None
        http = ""
        for line in proc.stdout:
            m = re.match(r"ready: grpc=\S+ http=(\S+)", line)
            if m:
                http = m.group(1)
                break
        if not http:
            raise SystemExit("server did not start")
        base = f"http://{http}"
        # Lift the plan's per-key cap: the bench measures the server, not the limiter.
        r = httpx.patch(
            f"{base}/v1/settings",
            headers={"Authorization": f"Bearer {ADMIN}"},
            json={"plan": "enterprise", "limits": {"requests_per_second": 1_000_000},
                  "currency": "EUR", "fx_rates": {"EUR": 0.92}},
        )  # fmt: skip
        r.raise_for_status()
        latencies: list[float] = []
        acked: list[str] = []
        start = time.monotonic()

        async def run() -> None:
            until = start + args.seconds
            keyed = not args.no_idempotency_key
            await asyncio.gather(
                *(client(base, until, latencies, acked, keyed) for _ in range(args.clients))
            )

        asyncio.run(run())
        elapsed = time.monotonic() - start
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        con = connect(StoreSettings(catalog=str(data / "catalog.ducklake"),
                                    data_path=str(data / "data")))  # fmt: skip
        stored = {r[0] for r in con.execute("SELECT event_id FROM lake.roi_events").fetchall()}
        con.close()
        missing = len(set(acked) - stored)
        keyed = not args.no_idempotency_key
        print(f"clients={args.clients} seconds={elapsed:.1f} idempotency_key={keyed}")
        print(f"acknowledged={len(acked)} events/s={len(acked) / elapsed:.0f}")
        print(f"latency p50={pct(latencies, 0.5):.1f} ms p99={pct(latencies, 0.99):.1f} ms")
        print(f"stored={len(stored)} acknowledged_missing={missing}")
        if missing:
            raise SystemExit("acknowledged events are missing from the store")


if __name__ == "__main__":
    main()
