"""Web UI benchmark: each page's time on the read benchmark's store (`bench/read_data.py`, 1M runs
by default), beside the JSON API route the page mirrors, measured in the same run.

A real `agentledger serve` on the store; one browser-like session (signed in through the form
with a read key and an admin key) asks each page, and one API client the route it mirrors,
alternately, one request at a time. Printed per page: HTTP p50/p95, the server's own time p50
(the `Server-Timing` header of the page), the API route's HTTP p50, and the ratio of the two.

    python bench/ui.py --runs 100000                # quick
    python bench/ui.py                              # 1,000,000 runs, ~10M spans
    python bench/ui.py --data-dir D --reuse         # time a store built before
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.read_api import machine  # noqa: E402
from bench.read_data import DAYS, ORG, build  # noqa: E402
from collector.config import ConfigOverrides, load_config  # noqa: E402
from collector.store.lake import StoreSettings  # noqa: E402
from collector.store.writer import Store  # noqa: E402

READ_KEY = "al_read_0badc0de_" + "0" * 40
ADMIN_KEY = "al_admin_0badc0df_" + "1" * 40
CONFIG = """
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:0"}}
storage: {{path: "{data}"{storage}}}
auth:
  bootstrap: false
  orgs: [{{name: {org}, keys: [{{scope: read, key: "{read}"}}, {{scope: admin, key: "{admin}"}}]}}]
"""
TARGET_MS = 150.0


def pct(samples: list[float], q: float) -> float:
    """The q-quantile in ms: the median for 0.5, else the nearest-rank value."""
    s = sorted(samples)
    if q == 0.5:
        return statistics.median(s) * 1000
    return s[max(0, math.ceil(q * len(s)) - 1)] * 1000


def sign_in(ui: httpx.Client, key: str) -> None:
    form = ui.get("/ui/sign-in").text
    token = re.search(r'action="/ui/sign-in".*?name="csrf" value="([^"]+)"', form, re.S)
    assert token, "no sign-in form"
    r = ui.post("/ui/sign-in", data={"key": key, "csrf": token.group(1)})
    assert r.status_code == 303, f"sign-in: {r.status_code}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--spans-per-run", type=int, default=10)
    ap.add_argument("--requests", type=int, default=20, help="timed requests a page")
    ap.add_argument("--data-dir", type=Path, help="keep the store here (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="time the store already in --data-dir")
    ap.add_argument("--storage", default="", help="more of storage:, e.g. 'threads: 1'")
    args = ap.parse_args()
    if args.reuse and args.data_dir is None:
        ap.error("--reuse needs --data-dir")
    # The API routes share one read token's 300 requests a minute: 7 of them are timed.
    if 7 * (args.requests + 2) > 290:
        ap.error("--requests: at most 39")

    print(f"machine: {machine()}")
    tmp = Path(tempfile.mkdtemp(prefix="al-ui-bench-"))
    data = args.data_dir or tmp / "data"
    cfg = tmp / "bench.yaml"
    storage = f", {args.storage}" if args.storage else ""
    cfg.write_text(
        CONFIG.format(data=data, org=ORG, read=READ_KEY, admin=ADMIN_KEY, storage=storage)
    )
    loaded = load_config(cfg, {}, ConfigOverrides())
    settings = StoreSettings.from_config(loaded.storage)
    if not args.reuse:
        print(f"building {args.runs:,} runs x {args.spans_per_run} spans over {DAYS} days ...")
        t = time.perf_counter()
        build(settings, args.runs, args.spans_per_run, datetime.now(UTC), loaded.compaction)
        print(f"  built in {time.perf_counter() - t:.0f} s", flush=True)
    store = Store(settings)
    store.open()
    try:
        runs = int(store.query("SELECT count(*) FROM runs")[0][0])
        picked = store.query(
            "SELECT run_id FROM runs WHERE org = ? USING SAMPLE reservoir(100 ROWS) REPEATABLE (7)",
            [ORG],
        )
        busiest = store.query(
            "SELECT workflow_name FROM runs WHERE org = ? "
            "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
            [ORG],
        )[0][0]
    finally:
        store.close()
    run_ids = [str(r[0]) for r in picked]
    print(f"rows: runs {runs:,}; run pages over {len(run_ids)} sampled runs; workflow {busiest}")

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
        results = measure(f"http://{api}", run_ids, busiest, args.requests)
    finally:
        server.terminate()
        server.wait(60)
    report(results, args.requests)
    if args.data_dir is None:
        shutil.rmtree(tmp, ignore_errors=True)


Timed = dict[str, tuple[list[float], list[float], list[float]]]  # page: (HTTP, server, API)


def measure(base: str, run_ids: list[str], workflow: str, n: int) -> Timed:
    """Each page and its API route(s), alternately; a page mirroring two routes (one workflow:
    stats and tools) is compared with their sum."""
    pages: dict[str, tuple[Callable[[int], str], list[Callable[[int], str]], str]] = {
        "/ui/ (overview)": (lambda i: "/ui/", [lambda i: "/api/metrics/overview"], READ_KEY),
        "/ui/runs": (lambda i: "/ui/runs", [lambda i: "/api/runs"], READ_KEY),
        "/ui/runs/{id}": (
            lambda i: f"/ui/runs/{run_ids[i % len(run_ids)]}",
            [lambda i: f"/api/runs/{run_ids[i % len(run_ids)]}"],
            READ_KEY,
        ),
        "/ui/workflows": (lambda i: "/ui/workflows", [lambda i: "/api/workflows"], READ_KEY),
        "/ui/workflows/{name}": (
            lambda i: f"/ui/workflows/{workflow}",
            [
                lambda i: f"/api/workflows/{workflow}/stats",
                lambda i: f"/api/workflows/{workflow}/tools",
            ],
            READ_KEY,
        ),
        "/ui/alerts": (lambda i: "/ui/alerts", [lambda i: "/api/alert-events"], READ_KEY),
        "/ui/review": (lambda i: "/ui/review", [lambda i: "/api/logs?pending=true"], READ_KEY),
        "/ui/keys": (lambda i: "/ui/keys", [lambda i: "/api/keys"], ADMIN_KEY),
    }
    out: Timed = {}
    with (
        httpx.Client(base_url=base, timeout=120) as ui,
        httpx.Client(base_url=base, timeout=120) as client,
    ):
        sign_in(ui, READ_KEY)
        sign_in(ui, ADMIN_KEY)
        for name, (page, routes, key) in pages.items():
            http: list[float] = []
            server: list[float] = []
            mirror: list[float] = []
            headers = {"Authorization": f"Bearer {key}"}
            for i in range(n + 2):  # two warm-up rounds, as a running server has its caches
                t = time.perf_counter()
                r = ui.get(page(i))
                took = time.perf_counter() - t
                assert r.status_code == 200, f"{page(i)}: {r.status_code} {r.text[:300]}"
                m = re.search(r"dur=([\d.]+)", r.headers.get("server-timing", ""))
                t = time.perf_counter()
                for route in routes:
                    a = client.get(route(i), headers=headers)
                    assert a.status_code == 200, f"{route(i)}: {a.status_code} {a.text[:200]}"
                api = time.perf_counter() - t
                if i >= 2:
                    http.append(took)
                    server.append(float(m.group(1)) / 1000 if m else took)
                    mirror.append(api)
            out[name] = (http, server, mirror)
    return out


def report(results: Timed, n: int) -> None:
    print(f"\n{n} requests a page, one at a time, each followed by its API route(s)")
    print(
        f"{'page':<24}{'HTTP p50':>10}{'HTTP p95':>10}{'server p50':>12}{'API p50':>10}"
        f"{'page/API':>10}{'target':>10}"
    )
    for name, (http, server, api) in results.items():
        h50, h95 = pct(http, 0.5), pct(http, 0.95)
        s50, a50 = pct(server, 0.5), pct(api, 0.5)
        ok = "ok" if h50 < TARGET_MS else "MISSED"
        print(
            f"{name:<24}{h50:>8.1f}ms{h95:>8.1f}ms{s50:>10.1f}ms{a50:>8.1f}ms"
            f"{h50 / a50:>9.2f}x{'<150 ms':>9} {ok}"
        )


if __name__ == "__main__":
    main()
