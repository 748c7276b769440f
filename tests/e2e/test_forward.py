"""OTLP forwarding between two real agentledger instances: A forwards to B, B starts down.

Spans sent to A are acknowledged while B is down and stay queued on A's disk across a restart
of A; once B is up every span arrives there exactly once (counted as B received them and as B
stored them). Both exporters, `otlp` (gRPC) and `otlphttp`.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.otlp import PROTOBUF, spans_request
from tests.e2e.server import KEYS, Server, make_server
from tests.promtext import metric

INGEST = KEYS[("acme", "ingest")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _target(tmp: Path, grpc_port: int, http_port: int) -> Server:
    (tmp / "b").mkdir()
    b = make_server(tmp / "b")
    text = b.config_path.read_text()
    text = text.replace(
        'grpc: {endpoint: "127.0.0.1:0"', f'grpc: {{endpoint: "127.0.0.1:{grpc_port}"'
    )
    text = text.replace(
        'http: {endpoint: "127.0.0.1:0"', f'http: {{endpoint: "127.0.0.1:{http_port}"'
    )
    b.config_path.write_text(text)
    return b


def _forwarder(tmp: Path, kind: str, endpoint: str) -> Server:
    tls = "\n    tls: {insecure: true}" if kind == "otlp" else ""
    extra = f"""
exporters:
  store: {{}}
  {kind}/b:
    endpoint: "{endpoint}"
    headers: {{Authorization: "Bearer {INGEST}"}}
    retry_on_failure: {{initial_interval: 100ms, max_interval: 500ms}}{tls}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [normalise, cost], exporters: [store, {kind}/b]}}
"""
    (tmp / "a").mkdir()
    return make_server(tmp / "a", extra)


def _send(server: Server, seed: int, n: int) -> None:
    body = spans_request("forwarded", n=n, seed=seed).SerializeToString()
    r = httpx.post(
        f"{server.base_url}/v1/traces",
        content=body,
        headers={"Authorization": f"Bearer {INGEST}", "Content-Type": PROTOBUF},
        timeout=30.0,
    )
    assert r.status_code == 200, r.text


def _metrics(server: Server) -> str:
    return httpx.get(f"{server.base_url}/metrics", timeout=30.0).text


@pytest.mark.parametrize("kind", ["otlp", "otlphttp"])
def test_target_down_then_up_nothing_lost_nothing_doubled(tmp_path: Path, kind: str) -> None:
    grpc_port, http_port = _free_port(), _free_port()
    endpoint = f"127.0.0.1:{grpc_port}" if kind == "otlp" else f"http://127.0.0.1:{http_port}"
    a = _forwarder(tmp_path, kind, endpoint).start()
    b = _target(tmp_path, grpc_port, http_port)
    try:
        started = time.monotonic()
        for seed in range(4):
            _send(a, seed, 25)
        assert time.monotonic() - started < 15  # acknowledged while the target is down
        assert metric(_metrics(a), "agentledger_forward_queue_batches") == 4
        assert a.stop() == 0

        a.start()  # restarted while B is still down: the queue is still there
        _send(a, 4, 25)
        assert metric(_metrics(a), "agentledger_forward_queue_batches") == 5

        b.start()
        deadline = time.monotonic() + 60
        while metric(_metrics(a), "agentledger_forward_queue_batches") > 0:
            assert time.monotonic() < deadline, "the queue did not drain"
            time.sleep(0.2)
        text = _metrics(a)
        assert metric(text, "agentledger_forward_items_sent_total", signal="traces") == 125
        assert metric(text, "agentledger_forward_items_dropped_total") == 0
        seen = _metrics(b)
        received = metric(seen, "agentledger_items_received_total", signal="traces")
        accepted = metric(seen, "agentledger_items_accepted_total", signal="traces")
        assert (received, accepted) == (125, 125)
        assert metric(seen, "agentledger_items_deduplicated_total") == 0
    finally:
        for server in (a, b):
            if server.proc is not None and server.proc.poll() is None:
                server.stop()
    total, distinct, orgs = b.query(
        "SELECT count(*), count(DISTINCT (trace_id, span_id)), list(DISTINCT org) FROM spans"
    )[0]
    assert (total, distinct, orgs) == (125, 125, ["acme"])
    stored_a = a.query("SELECT count(*) FROM spans")[0][0]
    assert stored_a == 125
