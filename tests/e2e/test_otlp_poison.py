"""Poison OTLP input end to end: values the store cannot hold are kept clamped (the item kept) or
refused for good (HTTP 400 / gRPC INVALID_ARGUMENT), never answered 503 / UNAVAILABLE, which
exporters retry until they drop the whole batch. Over OTLP/HTTP and OTLP/gRPC.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.otlp import JSON, PROTOBUF
from tests.e2e.server import KEYS, Server, make_server
from tests.otlp_factory import kv

INT64_MAX = 2**63 - 1
INGEST = KEYS[("acme", "ingest")]
SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = make_server(tmp_path_factory.mktemp("poison")).start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.stop()


def span_request(seed: int, **fields: int) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", f"poison-{seed}"))
    values = {
        "start_time_unix_nano": 1_700_000_000_000_000_000,
        "end_time_unix_nano": 1_700_000_001_000_000_000,
        **fields,
    }
    span = rs.scope_spans.add().spans.add(
        trace_id=(0x5000 + seed).to_bytes(16, "big"),
        span_id=(seed + 1).to_bytes(8, "big"),
        name="chat gpt-4o",
        **values,
    )
    span.attributes.extend(
        [
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.request.model", "gpt-4o"),
            kv("gen_ai.usage.input_tokens", 1e300),
            kv("gen_ai.usage.output_tokens", "9" * 400),
            kv("gen_ai.usage.cost", math.inf),
            kv("ratio", math.nan),
        ]
    )
    span.events.add(name="e", time_unix_nano=2**64 - 1)
    return req.SerializeToString()


def log_request(seed: int) -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(kv("service.name", f"poison-{seed}"))
    rec = rl.scope_logs.add().log_records.add(
        time_unix_nano=2**64 - 1, observed_time_unix_nano=2**63
    )
    rec.body.string_value = f"poison log {seed}"
    return req.SerializeToString()


def gauge_request(seed: int) -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", f"poison-{seed}"))
    metrics = rm.scope_metrics.add().metrics
    metrics.add(name="g").gauge.data_points.add(time_unix_nano=2**64 - 1, as_double=math.inf)
    metrics.add(name="h").histogram.data_points.add(time_unix_nano=1, count=2**64 - 1)
    return req.SerializeToString()


KEPT: list[tuple[str, Callable[[int], bytes]]] = [
    ("traces", lambda seed: span_request(seed, end_time_unix_nano=2**64 - 1)),
    ("traces", lambda seed: span_request(seed, start_time_unix_nano=2**63)),
    ("logs", log_request),
    ("metrics", gauge_request),
]

_SPAN_JSON = (
    '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10",'
    '"spanId":"0102030405060708",%s}]}]}]}'
)
_LOG_JSON = '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{%s}]}]}]}'
_METRIC_JSON = '{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{%s}]}]}]}'
REFUSED_JSON = [
    ("traces", _SPAN_JSON % '"kind": Infinity'),
    ("traces", _SPAN_JSON % '"name": "\\ud800"'),
    ("logs", _LOG_JSON % '"severityNumber": "\\ud800"'),
    ("logs", _LOG_JSON % '"severityNumber": Infinity'),
    ("metrics", _METRIC_JSON % '"name": "\\ud800", "gauge": {"dataPoints": [{"asInt": "1"}]}'),
    (
        "metrics",
        _METRIC_JSON
        % '"name": "s", "sum": {"aggregationTemporality": "\\ud800", "dataPoints": [{}]}',
    ),
]


def post(server: Server, signal: str, body: bytes, media: str = PROTOBUF) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/{signal}",
        content=body,
        headers={"authorization": f"Bearer {INGEST}", "content-type": media},
        timeout=60,
    )


def export(server: Server, signal: str, body: bytes) -> grpc.StatusCode:
    with grpc.insecure_channel(server.grpc) as channel:
        call = channel.unary_unary(f"/{SERVICES[signal]}/Export")
        try:
            call(body, metadata=(("authorization", f"Bearer {INGEST}"),), timeout=60)
        except grpc.RpcError as e:
            return e.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("signal", "body"), KEPT)
def test_out_of_range_values_are_kept_over_http_and_grpc(
    server: Server, signal: str, body: Callable[[int], bytes]
) -> None:
    seed = KEPT.index((signal, body))
    r = post(server, signal, body(seed))
    assert r.status_code == 200, r.content
    assert export(server, signal, body(100 + seed)) == grpc.StatusCode.OK


@pytest.mark.parametrize(("signal", "text"), REFUSED_JSON)
def test_bad_otlp_json_is_refused_for_good(server: Server, signal: str, text: str) -> None:
    r = post(server, signal, text.encode(), JSON)
    assert r.status_code == 400, r.content
    assert "retry-after" not in r.headers
    assert r.json()["code"] == 3  # INVALID_ARGUMENT


def test_a_malformed_protobuf_is_invalid_argument_over_grpc(server: Server) -> None:
    assert export(server, "traces", b"\x0a\x05\x0a\x03\x0a\x01") == grpc.StatusCode.INVALID_ARGUMENT


def test_what_was_kept_is_stored_clamped(server: Server) -> None:
    assert server.stop() == 0
    spans = server.query(
        """SELECT service_name, start_time_unix_nano, end_time_unix_nano, input_tokens,
                  output_tokens, cost_usd, attributes->>'ratio', events->0->>'time_unix_nano'
           FROM spans WHERE service_name IN ('poison-0', 'poison-100') ORDER BY 1"""
    )
    assert spans == [
        (svc, 1_700_000_000_000_000_000, INT64_MAX, None, None, None, "NaN", str(INT64_MAX))
        for svc in ("poison-0", "poison-100")
    ]
    started = server.query("SELECT start_time_unix_nano FROM spans WHERE service_name = 'poison-1'")
    assert started == [(INT64_MAX,)]
    logs = server.query(
        "SELECT time_unix_nano, observed_time_unix_nano FROM logs WHERE service_name = 'poison-2'"
    )
    assert logs == [(INT64_MAX, INT64_MAX)]
    points = server.query(
        """SELECT metric_name, time_unix_nano, value, count FROM metrics
           WHERE service_name = 'poison-3' ORDER BY 1"""
    )
    assert points == [("g", INT64_MAX, math.inf, None), ("h", 1, None, INT64_MAX)]
