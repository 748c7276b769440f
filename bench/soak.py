"""Soak benchmark: drives a real `agentledger serve` for minutes (or to N spans) and prints, per
window, what changes as the store grows.

The ingest benchmark's server and payloads (`bench/ingest.py`: realistic 8-span agent traces,
512 spans a request, everything on by default), from 16 gRPC clients; every request gets fresh
trace ids and times of now, patched into one serialised template, so the client costs little.
Per window: acknowledged spans/s, p50/p99, store size and Parquet file count, runs listed in
/api/runs against runs sent and the derivation lag, RSS and CPU of the server and its decode
workers, and the server's own lag gauges. Then: the parse ceiling of the same payloads, each
window against the first minute, and after the load the catch-up time and the durable count.

    python bench/soak.py --minutes 10
    python bench/soak.py --max-spans 10000000 --minutes 60
    python bench/soak.py --minutes 2 --profile /tmp/soak.svg   # py-spy on server and workers
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import math
import os
import platform
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402
    KEY,
    READ,
    count_rows,
    process_tree,
    start_server,
    write_config,
)
from tests.otlp_factory import request_of  # noqa: E402

SPANS = 512
SPANS_PER_TRACE = 8
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Payloads:
    """One serialised request, re-keyed per use: new trace ids and its times shifted to now, by
    patching the bytes where they sit (fixed-width fields), so a request costs ~1 ms to make."""

    def __init__(self, spans: int = SPANS, seed: int = 7) -> None:
        req = request_of(spans, seed=seed)
        self.template = req.SerializeToString()
        all_spans = list(req.resource_spans[0].scope_spans[0].spans)
        self.spans = len(all_spans)
        trace_ids = sorted({s.trace_id for s in all_spans})
        self._trace_at = [self._find(t, self.template) for t in trace_ids]
        if sum(map(len, self._trace_at)) != self.spans:
            raise RuntimeError("trace ids found in the template do not match its spans")
        times: dict[int, int] = {}
        for s in all_spans:
            for t in (s.start_time_unix_nano, s.end_time_unix_nano):
                times[t] = times.get(t, 0) + 1
        self._time_at: list[tuple[int, list[int]]] = []
        for t in sorted(times):
            at = self._find(struct.pack("<Q", t), self.template)
            if len(at) != times[t]:
                raise RuntimeError("span times found in the template do not match its spans")
            self._time_at.append((t, at))
        self._last_end = max(times)
        self.traces = len(trace_ids)

    @staticmethod
    def _find(needle: bytes, haystack: bytes) -> list[int]:
        found, i = [], haystack.find(needle)
        while i >= 0:
            found.append(i)
            i = haystack.find(needle, i + len(needle))
        return found

    def make(self, rng: random.Random, now_ns: int) -> bytes:
        buf = bytearray(self.template)
        for at in self._trace_at:
            new = rng.randbytes(16)
            for i in at:
                buf[i : i + 16] = new
        shift = now_ns - self._last_end  # the traces end now
        for t, at in self._time_at:
            for i in at:
                struct.pack_into("<Q", buf, i, t + shift)
        return bytes(buf)


@dataclass
class Load:
    """What the clients did, appended as answers come back (one event loop: no locks)."""

    done: list[tuple[float, float]] = field(default_factory=list)  # (answered at, latency)
    runs_at: list[float] = field(default_factory=list)  # times, one per acknowledged request
    acked: int = 0
    refused: int = 0
    refusals: dict[str, int] = field(default_factory=dict)

    def runs_acked_by(self, t: float, per_request: int) -> int:
        return bisect.bisect_right(self.runs_at, t) * per_request


async def clients(
    target: str,
    payloads: Payloads,
    *,
    n: int,
    until: float,
    max_spans: int,
    load: Load,
    stop: asyncio.Event,
    seed: int = 1000,
) -> None:
    async def one(seed: int) -> None:
        rng = random.Random(seed)
        async with grpc.aio.insecure_channel(target) as channel:
            export = channel.unary_unary(
                EXPORT, request_serializer=None, response_deserializer=None
            )
            while time.monotonic() < until and load.acked < max_spans and not stop.is_set():
                body = payloads.make(rng, time.time_ns())
                t = time.monotonic()
                try:
                    await export(body, metadata=(("authorization", f"Bearer {KEY}"),), timeout=60)
                except grpc.aio.AioRpcError as e:
                    load.refused += 1
                    code = e.code().name
                    load.refusals[code] = load.refusals.get(code, 0) + 1
                    await asyncio.sleep(0.5)
                    continue
                now = time.monotonic()
                load.acked += payloads.spans
                load.done.append((now, now - t))
                load.runs_at.append(now)

    await asyncio.gather(*(one(seed + i) for i in range(n)))


def proc_status(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) in MiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return 0.0, 0.0
    rss = re.search(r"VmRSS:\s+(\d+) kB", text)
    hwm = re.search(r"VmHWM:\s+(\d+) kB", text)
    return (int(rss.group(1)) / 1024 if rss else 0.0, int(hwm.group(1)) / 1024 if hwm else 0.0)


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store_files(data_dir: Path) -> tuple[int, int, int]:
    """(bytes of catalog and data files, Parquet files on disk, of them in `spans`)."""
    total = files = spans = 0
    for dirpath, _, names in os.walk(data_dir):
        for name in names:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue  # compacted away meanwhile
            if name.endswith(".parquet"):
                files += 1
                spans += "/spans" in dirpath
    return total, files, spans


def metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.eE+-]+|NaN)$", text, re.M)
    return float(m.group(1)) if m else None


@dataclass
class Window:
    index: int
    end: float  # seconds since the load began
    spans_per_s: float
    p50_ms: float
    p99_ms: float
    store_mib: float
    files: int
    span_files: int
    runs_sent: int
    runs_listed: int
    lag_s: float
    server_lag_s: float | None
    server_lag_spans: float | None
    commit_ms: float  # mean group commit in the window, from the server's histogram
    steps: str  # derivation steps in the window: count, mean seconds reading/assembling/committing
    rss_mib: list[float]
    cpu: list[float]  # share of one core per process, server first
    refused: int
    load_avg: float


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] * 1000


async def sample(
    http_ep: str,
    data_dir: Path,
    server_pid: int,
    *,
    load: Load,
    start: float,
    window_s: float,
    from_iso: str,
    runs_per_request: int,
    windows: list[Window],
    stop: asyncio.Event,
) -> None:
    """Every `window_s`: one `Window`, printed as it closes."""
    index = 0
    seen = 0
    refused_before = 0
    cpu_before = {p: cpu_seconds(p) for p in process_tree(server_pid)}
    commits_before = (0.0, 0.0)
    phases = ("steps_total", "read_seconds_total", "assemble_seconds_total", "commit_seconds_total")
    steps_before = [0.0] * len(phases)
    before = time.monotonic()
    async with httpx.AsyncClient(timeout=60) as client:
        while not stop.is_set():
            wait = start + (index + 1) * window_s - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            if stop.is_set():
                break
            now = time.monotonic()
            index += 1
            new = load.done[seen:]
            seen = len(load.done)
            elapsed = now - before
            rate = len(new) * SPANS / elapsed
            size, files, span_files = await asyncio.to_thread(store_files, data_dir)
            listed = -1
            r = await client.get(
                f"http://{http_ep}/api/runs",
                params={"from": from_iso, "limit": 1},
                headers={"authorization": f"Bearer {READ}"},
            )
            if r.status_code == 200:
                listed = int(r.json()["total_count"])
            page = (await client.get(f"http://{http_ep}/metrics")).text
            commits = (
                metric(page, "agentledger_commit_duration_seconds_sum") or 0.0,
                metric(page, "agentledger_commit_duration_seconds_count") or 0.0,
            )
            n_commits = commits[1] - commits_before[1]
            commit_ms = (commits[0] - commits_before[0]) / n_commits * 1000 if n_commits else 0.0
            commits_before = commits
            steps_now = [metric(page, f"agentledger_derivation_{p}") or 0.0 for p in phases]
            d = [a - b for a, b in zip(steps_now, steps_before, strict=True)]
            steps_before = steps_now
            steps = f"{d[0]:.0f}:" + "/".join(f"{x / d[0]:.1f}" for x in d[1:]) if d[0] else "0"
            sent = load.runs_acked_by(now, runs_per_request)
            # The oldest unlisted run was acknowledged when the acknowledged count passed the
            # listed one (runs are derived in commit order): its age is the lag.
            lag = 0.0
            if listed >= 0 and sent > listed:
                i = listed // runs_per_request
                lag = now - load.runs_at[i] if i < len(load.runs_at) else 0.0
            pids = process_tree(server_pid)
            cpu_now = {p: cpu_seconds(p) for p in pids}
            cpu = [(cpu_now[p] - cpu_before.get(p, cpu_now[p])) / elapsed for p in pids]
            cpu_before = cpu_now
            w = Window(
                index=index,
                end=now - start,
                spans_per_s=rate,
                p50_ms=pct([lat for _, lat in new], 0.5),
                p99_ms=pct([lat for _, lat in new], 0.99),
                store_mib=size / 2**20,
                files=files,
                span_files=span_files,
                runs_sent=sent,
                runs_listed=listed,
                lag_s=lag,
                server_lag_s=metric(page, "agentledger_derivation_lag_seconds"),
                server_lag_spans=metric(page, "agentledger_derivation_lag_spans"),
                commit_ms=commit_ms,
                steps=steps,
                rss_mib=[proc_status(p)[0] for p in pids],
                cpu=cpu,
                refused=load.refused - refused_before,
                load_avg=os.getloadavg()[0],
            )
            refused_before = load.refused
            before = now
            windows.append(w)
            print_window(w)


HEADER = (
    f"{'win':>4} {'end s':>6} {'spans/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'store MiB':>9} "
    f"{'files':>6} {'spans f':>7} {'runs sent':>9} {'listed':>9} {'lag s':>6} {'srv lag':>7} "
    f"{'lag spans':>9} {'commit':>6} {'steps:r/a/c s':>15} {'RSS MiB (srv+workers)':>22} "
    f"{'CPU srv/wk':>12} "
    f"{'503':>4} {'load':>5}"
)


def print_window(w: Window) -> None:
    srv = "-" if w.server_lag_s is None else f"{w.server_lag_s:.1f}"
    spans = "-" if w.server_lag_spans is None else f"{w.server_lag_spans:,.0f}"
    rss = f"{sum(w.rss_mib):,.0f} ({'+'.join(f'{r:.0f}' for r in w.rss_mib)})"
    cpu = "/".join(f"{c:.0%}" for c in w.cpu[:1]) + " " + "/".join(f"{c:.0%}" for c in w.cpu[1:])
    print(
        f"{w.index:>4} {w.end:>6.0f} {w.spans_per_s:>8,.0f} {w.p50_ms:>7.0f} {w.p99_ms:>7.0f} "
        f"{w.store_mib:>9,.0f} {w.files:>6,} {w.span_files:>7,} {w.runs_sent:>9,} "
        f"{w.runs_listed:>9,} {w.lag_s:>6.1f} {srv:>7} {spans:>9} {w.commit_ms:>6.0f} "
        f"{w.steps:>15} {rss:>22} "
        f"{cpu:>12} "
        f"{w.refused:>4} {w.load_avg:>5.1f}",
        flush=True,
    )


def parse_ceiling(payloads: Payloads, seconds: float = 2.0) -> float:
    data = [payloads.make(random.Random(i), time.time_ns()) for i in range(8)]
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        ExportTraceServiceRequest().ParseFromString(data[n % len(data)])
        n += 1
    return n * payloads.spans / (time.perf_counter() - start)


async def catch_up(http_ep: str, runs: int, from_iso: str, limit_s: float) -> float:
    """Seconds until /api/runs lists `runs` runs after the load stopped (NaN past `limit_s`)."""
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=60) as client:
        while time.monotonic() - start < limit_s:
            r = await client.get(
                f"http://{http_ep}/api/runs",
                params={"from": from_iso, "limit": 1},
                headers={"authorization": f"Bearer {READ}"},
            )
            if r.status_code == 200 and r.json()["total_count"] >= runs:
                return time.monotonic() - start
            await asyncio.sleep(0.5)
    return float("nan")


async def soak(
    args: argparse.Namespace, payloads: Payloads, endpoints: tuple[str, str], server_pid: int,
    data_dir: Path,
) -> tuple[Load, list[Window], float]:  # fmt: skip
    http_ep, grpc_ep = endpoints
    from_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    # Warm-up: the decode workers start with the first requests.
    warm = Load()
    await clients(grpc_ep, payloads, n=2, until=time.monotonic() + 60, max_spans=8 * SPANS,
                  load=warm, stop=asyncio.Event(), seed=1)  # fmt: skip
    load = Load()
    windows: list[Window] = []
    stop = asyncio.Event()
    start = time.monotonic()
    runs_per_request = payloads.traces
    # The warm-up's runs are listed too: count them as sent before the load.
    load.runs_at = [start - 1.0] * (warm.acked // SPANS)
    sampler = asyncio.create_task(
        sample(
            http_ep,
            data_dir,
            server_pid,
            load=load,
            start=start,
            window_s=args.window_s,
            from_iso=from_iso,
            runs_per_request=runs_per_request,
            windows=windows,
            stop=stop,
        )
    )
    until = start + args.minutes * 60
    await clients(grpc_ep, payloads, n=args.clients, until=until, max_spans=args.max_spans,
                  load=load, stop=stop)  # fmt: skip
    stop.set()
    await sampler
    elapsed = time.monotonic() - start
    load.acked += warm.acked
    runs = len(load.runs_at) * runs_per_request
    lag = await catch_up(http_ep, runs, from_iso, args.catch_up_limit_s)
    if not math.isnan(lag):  # every run was listed within the limit
        print(f"\nload ran {elapsed:.0f} s; all {runs:,} runs listed {lag:.1f} s after it stopped")
    else:
        print(
            f"\nload ran {elapsed:.0f} s; not all {runs:,} runs listed "
            f"{args.catch_up_limit_s:.0f} s after it stopped"
        )
    return load, windows, lag


def summary(windows: list[Window], load: Load, ceiling: float, window_s: float) -> None:
    if not windows:
        return
    first = [w for w in windows if w.end <= 60.0 + window_s / 2] or windows[:1]
    base_rate = sum(w.spans_per_s for w in first) / len(first)
    base_p99 = max(w.p99_ms for w in first)
    rest = windows[len(first) :] or windows
    overall = sum(w.spans_per_s for w in windows) / len(windows)
    print(f"\nfirst minute: {base_rate:,.0f} spans/s, p99 {base_p99:,.0f} ms")
    print(
        f"later windows: lowest rate {min(w.spans_per_s for w in rest) / base_rate:.0%} of the "
        f"first minute (target >= 90%), mean {sum(w.spans_per_s for w in rest) / len(rest):,.0f}"
        f" spans/s; highest p99 {max(w.p99_ms for w in rest) / base_p99:.2f}x the first "
        f"minute's (target <= 1.5x)"
    )
    print(
        f"files on disk: max {max(w.files for w in windows):,} (last {windows[-1].files:,}); "
        f"store {windows[-1].store_mib:,.0f} MiB"
    )
    print(
        f"derivation lag: max {max(w.lag_s for w in windows):.1f} s (target <= 10 s); "
        f"runs listed at the last window {windows[-1].runs_listed:,} of {windows[-1].runs_sent:,}"
    )
    print(f"refused requests: {load.refused} {load.refusals or ''}")
    print(
        f"whole run: {overall:,.0f} spans/s; parse ceiling {ceiling:,.0f} spans/s on one core "
        f"-> {overall / ceiling:.2%} of it (first minute {base_rate / ceiling:.2%})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--max-spans", type=int, default=1 << 62, help="stop after this many")
    ap.add_argument("--window-s", type=float, default=15.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-derive", action="store_true", help="no run derivation on this node")
    ap.add_argument("--no-normalise", action="store_true", help="store only, no processors")
    ap.add_argument("--config-extra", default="", help="YAML appended to the server's config")
    ap.add_argument("--storage", default="", help="more of storage:, e.g. 'threads: 1'")
    ap.add_argument("--catch-up-limit-s", type=float, default=600.0)
    ap.add_argument("--keep", metavar="DIR", help="run in DIR (new) and keep the store there")
    ap.add_argument(
        "--profile", metavar="FILE", help="py-spy record server and workers (.svg, or .txt: raw)"
    )
    ap.add_argument("--profile-seconds", type=int, default=60)
    ap.add_argument("--profile-at", type=float, default=0, help="start py-spy after N seconds")
    args = ap.parse_args()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average {os.getloadavg()[0]:.1f}"
    )
    payloads = Payloads()
    print(f"{payloads.spans} spans a request ({payloads.traces} traces), "
          f"{len(payloads.template) / payloads.spans:.0f} bytes a span")  # fmt: skip
    ceiling = parse_ceiling(payloads)
    print(f"parse ceiling (one core, before the load): {ceiling:,.0f} spans/s", flush=True)

    if args.keep:
        Path(args.keep).mkdir(parents=True)  # fails if it exists: never mix two runs' stores
        tmp = str(Path(args.keep).resolve())
    else:
        tmp = tempfile.mkdtemp(prefix="al-soak-")
    cfg = write_config(
        tmp,
        workers=args.workers,
        normalise=not args.no_normalise,
        derive=not args.no_derive,
        extra=args.config_extra,
        storage=args.storage,
    )
    server, grpc_ep, http_ep = start_server(cfg)
    print(f"server pid {server.pid}, data {tmp}/data", flush=True)
    spy: subprocess.Popen[bytes] | None = None
    try:
        if args.profile:
            cmd = [
                str(Path(sys.executable).parent / "py-spy"), "record", "-o", args.profile,
                "--pid", str(server.pid), "--subprocesses", "--nonblocking",
                "-d", str(args.profile_seconds), "--rate", "50",
                "--format", "raw" if args.profile.endswith(".txt") else "flamegraph",
            ]  # fmt: skip
            delay = f"sleep {args.profile_at}; " if args.profile_at else ""
            spy = subprocess.Popen(["sh", "-c", delay + " ".join(cmd)])
        print(HEADER, flush=True)
        load, windows, _ = asyncio.run(
            soak(args, payloads, (http_ep, grpc_ep), server.pid, Path(tmp) / "data")
        )
        peaks = [proc_status(p)[1] for p in process_tree(server.pid)]
    finally:
        if spy is not None:
            spy.wait(args.profile_seconds + int(args.profile_at) + 120)
        server.send_signal(signal.SIGTERM)
        server.wait(300)
    after = parse_ceiling(payloads)
    durable = count_rows(f"{tmp}/data")
    print(
        f"\npeak RSS: {sum(peaks):,.0f} MiB in all; server {peaks[0]:,.0f}, workers "
        + ", ".join(f"{p:,.0f}" for p in peaks[1:])
        + " MiB"
    )
    print(
        f"durable spans in the store: {durable:,} (acknowledged {load.acked:,}: "
        f"{'equal' if durable == load.acked else 'MISMATCH'})"
    )
    print(f"parse ceiling after the load: {after:,.0f} spans/s")
    summary(windows, load, (ceiling + after) / 2, args.window_s)
    if args.keep:
        print(f"store kept in {tmp}/data")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
