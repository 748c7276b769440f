"""Derivation lag end to end: a real server whose run derivation steps only at start, so spans
committed afterwards wait; past `processors.runs.max_lag_s` new spans get 503 + Retry-After
(gRPC UNAVAILABLE), /health says why, /metrics shows the lag, and logs are still taken.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.e2e.otlp import PROTOBUF, spans_request
from tests.e2e.server import KEYS, Server, make_server
from tests.promtext import metric

AUTH = {"authorization": f"Bearer {KEYS[('acme', 'ingest')]}", "content-type": PROTOBUF}
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# Derivation steps once at start, then not for ten minutes: a commit's lag only grows.
STALLED = """processors:
  normalise: {}
  cost: {}
  runs: {interval_ms: 600000, max_lag_s: 1}
"""


def after_first_look(server: Server) -> Server:
    """`server` once derivation has finished its step at start. On a loaded machine that step
    can come after a test's first commit and derive it; after it, none comes for ten minutes."""
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        while metric(client.get("/metrics").text, "agentledger_derivation_looks_total") < 1:
            assert time.monotonic() < deadline, "run derivation never stepped"
            time.sleep(0.05)
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = make_server(tmp_path_factory.mktemp("lag"), extra=STALLED).start()
    try:
        yield after_first_look(s)
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.stop()


def test_past_the_lag_bound_spans_wait_and_health_and_metrics_say_so(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        page = client.get("/metrics").text
        assert metric(page, "agentledger_derivation_lag_seconds") == 0.0
        assert client.get("/health").json() == {"status": "ok"}
        first = spans_request("first", 3, seed=1).SerializeToString()
        assert client.post("/v1/traces", content=first, headers=AUTH).status_code == 200
        time.sleep(1.5)  # the deriver is not stepping: the commit is now past the 1 s bound

        page = client.get("/metrics").text
        assert metric(page, "agentledger_derivation_lag_seconds") > 1.0
        assert metric(page, "agentledger_derivation_lag_spans") == 3
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "refusing"
        assert "processors.runs.max_lag_s" in health.json()["reason"]

        more = spans_request("more", 3, seed=2).SerializeToString()
        refused = client.post("/v1/traces", content=more, headers=AUTH)
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        status = status_pb2.Status.FromString(refused.content)
        assert status.code == 14 and "behind ingest" in status.message

        # Logs do not wait on run derivation.
        logs = ExportLogsServiceRequest()
        logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hi"
        r = client.post("/v1/logs", content=logs.SerializeToString(), headers=AUTH)
        assert r.status_code == 200

    with grpc.insecure_channel(server.grpc) as channel:
        export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            export(more, metadata=[("authorization", AUTH["authorization"])], timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        page = client.get("/metrics").text
    assert metric(page, "agentledger_requests_refused_total", reason="derivation_lag") == 2
    assert metric(page, "agentledger_derivation_lag_spans") == 3  # nothing refused was stored


# Derivation stalled again, with a pace target and no bound: requests wait, then go in.
PACED = """processors:
  normalise: {}
  cost: {}
  runs: {interval_ms: 600000, max_lag_s: 0, pace_lag_s: 0.5, pace_wait_s: 1.5}
"""


def test_past_the_pace_target_spans_wait_for_derivation_then_are_taken(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = make_server(tmp_path_factory.mktemp("paced"), extra=PACED).start()
    try:
        after_first_look(server)
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            first = spans_request("first", 3, seed=1).SerializeToString()
            started = time.monotonic()
            assert client.post("/v1/traces", content=first, headers=AUTH).status_code == 200
            assert time.monotonic() - started < 1.5  # nothing waits to be derived yet
            time.sleep(1.0)  # the commit is now past the 0.5 s target

            more = spans_request("more", 3, seed=2).SerializeToString()
            started = time.monotonic()
            taken = client.post("/v1/traces", content=more, headers=AUTH)
            assert taken.status_code == 200
            assert time.monotonic() - started >= 1.5  # it waited out pace_wait_s

            page = client.get("/metrics").text
            assert metric(page, "agentledger_ingest_paced_total") == 1
            assert metric(page, "agentledger_ingest_paced_seconds_total") >= 1.5
            assert metric(page, "agentledger_derivation_lag_spans") == 6  # both were stored
            assert client.get("/health").json() == {"status": "ok"}  # paced, not refusing
    finally:
        server.stop()
