"""The disk cap end to end (`storage.max_size_mib`, `storage.on_full`): a real server filled past
its cap over OTLP either refuses new data with retryable answers (HTTP 503 + Retry-After, gRPC
UNAVAILABLE, the native APIs' 503) or drops the oldest data first; /metrics shows which.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import httpx

from collector.governance.diskcap import store_bytes
from collector.store.lake import StoreSettings
from tests import promtext
from tests.e2e.otlp import PROTOBUF, spans_request
from tests.e2e.server import KEYS, Server, make_server
from tests.otlp_factory import kv
from tests.promtext import has

INGEST = {"authorization": f"Bearer {KEYS[('acme', 'ingest')]}"}
MIB = 1024 * 1024
OLD_NS, NEW_NS = 1_600_000_000 * 10**9, int(time.time()) * 10**9


def bulky(seed: int, start_ns: int, n: int = 50) -> bytes:
    """`n` spans with ~20 KB of incompressible attributes each (~1 MiB a request)."""
    req = spans_request("bulk", n=n, seed=seed)
    for i, span in enumerate(req.resource_spans[0].scope_spans[0].spans):
        span.start_time_unix_nano = start_ns + i
        span.end_time_unix_nano = start_ns + i + 1000
        span.attributes.append(kv("blob", os.urandom(10_000).hex()))
    return req.SerializeToString()


def post(server: Server, body: bytes) -> httpx.Response:
    headers = {"content-type": PROTOBUF, **INGEST}
    return httpx.post(f"{server.base_url}/v1/traces", content=body, headers=headers, timeout=60)


def metric(server: Server, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics").text
    if not has(text, name, **labels):
        raise AssertionError(f"{name} {labels} not in /metrics")
    return promtext.metric(text, name, **labels)


def dropped(server: Server) -> float:
    """Rows dropped for the cap, over every kind (the spans here are LLM calls to normalise)."""
    text = httpx.get(f"{server.base_url}/metrics").text
    return promtext.metric(text, "agentledger_store_dropped_rows_total")


def wait_for(check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except AssertionError:  # not in /metrics yet
            pass
        time.sleep(0.5)
    raise AssertionError("condition not reached")


def capped_server(tmp_path: Path, mode: str, headroom_mib: int) -> Server:
    """A server whose cap is its empty store's size plus `headroom_mib`."""
    for sub in ("probe", mode):
        (tmp_path / sub).mkdir()
    probe = make_server(tmp_path / "probe").start()
    probe.stop()
    empty = store_bytes(
        StoreSettings(str(probe.data_dir / "catalog.ducklake"), str(probe.data_dir / "data"))
    )
    cap = empty // MIB + 1 + headroom_mib
    storage = f"max_size_mib: {cap}, on_full: {mode}, size_check_interval_s: 1"
    return make_server(
        tmp_path / mode, storage=storage, extra="retention: {cleanup_grace_s: 0}\n"
    ).start()


def test_refuse_mode_answers_retryable_errors_everywhere(tmp_path: Path) -> None:
    server = capped_server(tmp_path, "refuse", headroom_mib=2)
    try:
        assert metric(server, "agentledger_store_cap_mode", mode="refuse") == 1
        for seed in range(30):
            if post(server, bulky(seed, NEW_NS)).status_code != 200:
                break
        wait_for(lambda: metric(server, "agentledger_store_full") == 1)

        r = post(server, bulky(99, NEW_NS, n=1))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        with grpc.insecure_channel(server.grpc) as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            )
            try:
                export(bulky(98, NEW_NS, n=1), metadata=tuple(INGEST.items()), timeout=30)
                raise AssertionError("gRPC export was accepted by a full store")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
        track = httpx.post(
            f"{server.base_url}/v1/track",
            json={"agent_id": "a", "task_type": "email_classification", "outcome": "success"},
            headers=INGEST,
        )
        assert track.status_code == 503 and track.headers["retry-after"] == "1"
        assert metric(server, "agentledger_store_full_refusals_total") >= 3
        assert metric(server, "agentledger_store_measured_bytes") > metric(
            server, "agentledger_store_cap_bytes"
        )
        # Nothing of the refused requests is stored; what was accepted before is all there.
        accepted = server.output
    finally:
        server.stop()
    assert any("refusing new data" in line for line in accepted)
    assert server.query(
        "SELECT count(*) FROM spans WHERE trace_id = ?", [f"{0x1000 + 99:032x}"]
    ) == [(0,)]


def test_drop_oldest_mode_deletes_the_oldest_data_first(tmp_path: Path) -> None:
    server = capped_server(tmp_path, "drop_oldest", headroom_mib=3)
    try:
        for seed in range(8):  # old data first, then new data pushing the store over the cap
            assert post(server, bulky(seed, OLD_NS + seed * 10**12)).status_code == 200
        for seed in range(8, 12):
            assert post(server, bulky(seed, NEW_NS + seed)).status_code == 200
        wait_for(lambda: dropped(server) > 0)
        cap = metric(server, "agentledger_store_cap_bytes")
        wait_for(lambda: metric(server, "agentledger_store_measured_bytes") <= cap)
        assert metric(server, "agentledger_store_cap_mode", mode="drop_oldest") == 1
        assert post(server, bulky(50, NEW_NS, n=1)).status_code == 200  # never refuses
    finally:
        server.stop()
    assert any("dropped data older than" in line for line in server.output)
    new = server.query("SELECT count(*) FROM spans WHERE start_time_unix_nano >= ?", [NEW_NS])
    kept = {
        int(t, 16) - 0x1000: int(n)
        for t, n in server.query("SELECT trace_id, count(*) FROM spans GROUP BY 1")
    }
    assert new == [(4 * 50 + 1,)]  # every new span stayed
    assert 0 not in kept  # the oldest went first
    old_kept = sorted(s for s in kept if s < 8)
    assert old_kept == list(range(8 - len(old_kept), 8))  # what stayed of the old is the newest
