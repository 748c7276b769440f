"""Output evaluation benchmark against a real `agentledger serve`, with 20 non-LLM rules active.

1. sync: `sync: true` POST /api/logs from `--clients` clients → verdict latency p50/p99;
2. async: POSTs for `--seconds` → acknowledged logs/s, then the time until every one of them is
   evaluated (sustained evaluated logs/s), checked in the store after a drain.

    python bench/logs.py --sync 500 --seconds 10 --clients 8
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
logs: {{rate_limit_per_minute: 100000000}}
auth:
  bootstrap: false
  orgs: [{{name: bench, keys: [{{scope: ingest, key: "{key}"}}, {{scope: admin, key: "{admin}"}}]}}]
"""
RULES = [
    ("keyword_forbidden", "idiot, stupid, hate"),
    ("keyword_forbidden", '"as an AI", "I cannot"'),
    ("keyword_required", "any: order, ticket, refund"),
    ("keyword_required", "thank*"),
    ("regex_match", r"!\b\d{3}-\d{2}-\d{4}\b"),
    ("regex_match", r"!(?i)password\s*[:=]"),
    ("regex_match", r"[A-Z]"),
    ("regex_match", r"!\b[\w.]+@[\w.]+\.\w+\b"),
    ("length_limit", "2000"),
    ("length_limit", "min 10"),
    ("length_limit", "max 400 words"),
    ("confidence_threshold", "0.5"),
    ("json_field", "reply"),
    ("json_field", "meta.lang = en"),
    ("json_field", "items[0].sku"),
    ("json_field_keyword_required", "reply: thank*"),
    ("json_field_keyword_forbidden", "reply: guarantee*"),
    ("json_field_keyword_forbidden", "meta.notes: internal"),
    ("keyword_forbidden", "lawsuit, attorney"),
    ("length_limit", "5-50000"),
]
OUTPUT = (
    '{"reply": "Thank you for your order, the ticket is updated.", "meta": {"lang": "en", '
    '"notes": "none"}, "items": [{"sku": "A-1"}]}'
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def sync_phase(base: str, total: int, clients: int) -> list[float]:
    latencies: list[float] = []
    remaining = [total]

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            while remaining[0] > 0:
                remaining[0] -= 1
                body = {"project": "bench", "task": "sync", "output": OUTPUT, "sync": True,
                        "confidence": 0.9}  # fmt: skip
                t0 = time.perf_counter()
                r = await c.post("/api/logs", json=body, headers={"Authorization": f"Bearer {KEY}"})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200 or r.json()["status"] != "pass":
                    raise RuntimeError(f"{r.status_code}: {r.text}")

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


async def async_phase(base: str, seconds: float, clients: int) -> list[str]:
    acked: list[str] = []
    until = time.monotonic() + seconds

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            while time.monotonic() < until:
                body = {"project": "bench", "task": "async", "output": OUTPUT, "confidence": 0.9}
                r = await c.post("/api/logs", json=body, headers={"Authorization": f"Bearer {KEY}"})
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code}: {r.text}")
                acked.append(r.json()["id"])

    await asyncio.gather(*(client() for _ in range(clients)))
    return acked


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sync", type=int, default=500, help="sync requests")
    ap.add_argument("--seconds", type=float, default=10, help="async phase length")
    ap.add_argument("--clients", type=int, default=8)
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
        admin = {"Authorization": f"Bearer {ADMIN}"}
        for i, (kind, value) in enumerate(RULES):
            r = httpx.post(f"{base}/api/rules", headers=admin,
                           json={"name": f"r{i}", "type": kind, "value": value})  # fmt: skip
            r.raise_for_status()
        latencies = asyncio.run(sync_phase(base, args.sync, args.clients))
        start = time.monotonic()
        acked = asyncio.run(async_phase(base, args.seconds, args.clients))
        posted = time.monotonic() - start
        query = {"project": "bench", "task": "async", "status": "pending", "limit": 1}
        while httpx.get(f"{base}/api/logs", headers=admin, params=query).json()["total"]:
            time.sleep(0.05)
        evaluated = time.monotonic() - start
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        con = connect(StoreSettings(catalog=str(data / "catalog.ducklake"),
                                    data_path=str(data / "data")))  # fmt: skip
        rows = con.execute(
            "SELECT status, count(*) FROM lake.eval_logs WHERE task = 'async' GROUP BY status"
        ).fetchall()
        con.close()
        counts = dict(rows)
        print(f"rules={len(RULES)} clients={args.clients}")
        print(
            f"sync: n={len(latencies)} p50={pct(latencies, 0.5):.1f} ms "
            f"p99={pct(latencies, 0.99):.1f} ms"
        )
        print(
            f"async: acknowledged={len(acked)} in {posted:.1f}s "
            f"({len(acked) / posted:.0f} logs/s); "
            f"all evaluated after {evaluated:.1f}s ({len(acked) / evaluated:.0f} logs/s)"
        )
        print(f"stored by status: {counts}")
        if counts.get("pass", 0) != len(acked):
            raise SystemExit("not every acknowledged log was evaluated as pass")


if __name__ == "__main__":
    main()
