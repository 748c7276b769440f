"""OTLP/gRPC end to end: raw gRPC calls of the three Export methods against the real server.

One test sends every signal (gzip or not, re-sent, partially invalid) and then reads the
store; the others share one server with a 1 MiB message limit for errors and health.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.e2e.otlp import logs_request, metrics_request, spans_request
from tests.e2e.server import KEYS, Server, make_server
from tests.promtext import metric

INGEST = KEYS[("acme", "ingest")]
MIB = 1024 * 1024
SERVICES = {
    "traces": ("opentelemetry.proto.collector.trace.v1.TraceService", ExportTraceServiceResponse),
    "logs": ("opentelemetry.proto.collector.logs.v1.LogsService", ExportLogsServiceResponse),
    "metrics": (
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        ExportMetricsServiceResponse,
    ),
}


def export(channel: grpc.Channel, signal: str) -> Callable[..., Any]:
    service, response = SERVICES[signal]
    return channel.unary_unary(
        f"/{service}/Export",
        request_serializer=lambda b: b,
        response_deserializer=response.FromString,
    )


def auth(key: str = INGEST) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = make_server(tmp_path_factory.mktemp("grpc"), grpc="max_recv_msg_size_mib: 1").start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            assert s.stop() == 0


@pytest.fixture
def channel(shared: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(shared.grpc) as ch:
        yield ch


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_every_signal_is_stored_once(server: Server) -> None:
    with grpc.insecure_channel(server.grpc) as ch:
        traces, logs, metrics = export(ch, "traces"), export(ch, "logs"), export(ch, "metrics")
        resp = traces(spans_request("plain", 3, seed=1).SerializeToString(), metadata=auth())
        assert resp == ExportTraceServiceResponse()
        resp = traces(
            spans_request("gzip", 3, seed=2).SerializeToString(),
            metadata=auth(),
            compression=grpc.Compression.Gzip,
        )
        assert resp == ExportTraceServiceResponse()
        retry = spans_request("retry", 2, seed=3).SerializeToString()
        for compression in (grpc.Compression.NoCompression, grpc.Compression.Gzip, None):
            assert traces(retry, metadata=auth(), compression=compression) == (
                ExportTraceServiceResponse()
            )
        resp = traces(
            spans_request("partial", 1, seed=4, bad=3).SerializeToString(), metadata=auth()
        )
        assert resp.partial_success.rejected_spans == 3
        assert resp.partial_success.error_message
        traces(
            spans_request("globex", 1, seed=5).SerializeToString(),
            metadata=auth(KEYS[("globex", "ingest")]),
        )
        assert logs(logs_request("grpc-logs", 3).SerializeToString(), metadata=auth()) == (
            ExportLogsServiceResponse()
        )
        assert (
            metrics(
                metrics_request("grpc-metrics").SerializeToString(),
                metadata=auth(),
                compression=grpc.Compression.Gzip,
            )
            == ExportMetricsServiceResponse()
        )
    assert server.stop() == 0
    assert server.query(
        "SELECT org, service_name, count(*) FROM spans GROUP BY ALL ORDER BY ALL"
    ) == [
        ("acme", "gzip", 3),
        ("acme", "partial", 1),
        ("acme", "plain", 3),
        ("acme", "retry", 2),
        ("globex", "globex", 1),
    ]
    assert server.query("SELECT service_name, count(*) FROM logs GROUP BY ALL") == [
        ("grpc-logs", 3)
    ]
    assert server.query("SELECT service_name, sum(value) FROM metrics GROUP BY ALL") == [
        ("grpc-metrics", 85.0)
    ]


def test_unauthenticated(shared: Server, channel: grpc.Channel) -> None:
    body = spans_request("auth", 1, seed=20).SerializeToString()
    for signal in SERVICES:
        err = rpc_error(lambda s=signal: export(channel, s)(body))  # no metadata at all
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.details().startswith("missing_authorization")
    for metadata, code in (
        ([("authorization", "Bearer nope")], "invalid_api_key"),
        ([("authorization", INGEST)], "invalid_api_key"),  # no scheme
        (auth("al_live_cccc0001_" + "1" * 40), "invalid_api_key"),
        (auth(KEYS[("acme", "read")]), "invalid_api_key"),
        (auth(KEYS[("acme", "admin")]), "invalid_api_key"),
    ):
        err = rpc_error(lambda m=metadata: export(channel, "traces")(body, metadata=m))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        assert err.details().startswith(code)
        # Not retryable: no RetryInfo.
        trailing = dict(err.trailing_metadata() or ())
        assert "grpc-status-details-bin" not in trailing

    # A key revoked through the admin API is refused with key_revoked.
    admin = {"authorization": f"Bearer {KEYS[('acme', 'admin')]}"}
    with httpx.Client(base_url=shared.base_url, timeout=30) as http:
        created = http.post("/api/keys", json={"scope": "ingest", "name": "g"}, headers=admin)
        assert created.status_code == 201
        key = created.json()["key"]
        assert export(channel, "logs")(b"", metadata=auth(key)) == ExportLogsServiceResponse()
        assert http.delete(f"/api/keys/{created.json()['id']}", headers=admin).status_code == 200
    err = rpc_error(lambda: export(channel, "logs")(b"", metadata=auth(key)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details().startswith("key_revoked")


def test_malformed_messages_are_invalid_argument(channel: grpc.Channel) -> None:
    for signal in SERVICES:
        for garbage in (b"\x0a\x05\x0a\x03\x0a\x01", b"\xff\xff\xff\xff"):
            err = rpc_error(lambda s=signal, g=garbage: export(channel, s)(g, metadata=auth()))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (signal, garbage)
            assert "invalid protobuf" in err.details()


def test_partial_success_for_spans_with_invalid_ids(channel: grpc.Channel) -> None:
    req = spans_request("partial", 2, seed=21, bad=1)
    bad = req.resource_spans[0].scope_spans[0].spans
    bad.add(trace_id=b"\x01" * 16, span_id=b"\x00" * 8, name="zero span id")
    bad.add(trace_id=b"\x01" * 15, span_id=b"\x01" * 8, name="short trace id")
    resp = export(channel, "traces")(req.SerializeToString(), metadata=auth())
    assert resp.partial_success.rejected_spans == 3


def test_health_check_is_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", *(service for service, _ in SERVICES.values())):
        resp = stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, name
    err = rpc_error(lambda: stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service")))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_max_message_size(channel: grpc.Channel) -> None:
    traces = export(channel, "traces")
    fits = spans_request("fits", 1, seed=22)
    fits.resource_spans[0].scope_spans[0].spans[0].name = "x" * (MIB - 4096)
    resp = traces(fits.SerializeToString(), metadata=auth())
    assert resp == ExportTraceServiceResponse()
    big = spans_request("big", 1, seed=23)
    big.resource_spans[0].scope_spans[0].spans[0].name = "x" * (MIB + 1)
    err = rpc_error(lambda: traces(big.SerializeToString(), metadata=auth()))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Compressed small but inflated over the limit: refused the same way.
    err = rpc_error(
        lambda: traces(big.SerializeToString(), metadata=auth(), compression=grpc.Compression.Gzip)
    )
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The server is still fine afterwards.
    assert traces(b"", metadata=auth()) == ExportTraceServiceResponse()


def test_unknown_methods_are_unimplemented(channel: grpc.Channel) -> None:
    call = channel.unary_unary(
        "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    err = rpc_error(lambda: call(b"", metadata=auth()))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_metrics_count_grpc_by_transport(shared: Server, channel: grpc.Channel) -> None:
    def scrape() -> str:
        with httpx.Client(base_url=shared.base_url, timeout=30) as http:
            return http.get("/metrics").text

    before = scrape()
    body = spans_request("grpc-metrics", 3, seed=30, bad=2).SerializeToString()
    for _ in range(2):
        export(channel, "traces")(body, metadata=auth())
    export(channel, "logs")(logs_request("grpc-metrics", 4).SerializeToString(), metadata=auth())
    after = scrape()

    def moved(name: str, signal: str = "traces") -> float:
        labels = {"transport": "grpc", "signal": signal}
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert moved("agentledger_items_received_total") == 10
    assert moved("agentledger_items_accepted_total") == 3
    assert moved("agentledger_items_deduplicated_total") == 3
    assert moved("agentledger_items_rejected_total") == 4
    assert moved("agentledger_items_accepted_total", "logs") == 4
    assert metric(after, "agentledger_items_received_total", transport="http") == metric(
        before, "agentledger_items_received_total", transport="http"
    )
