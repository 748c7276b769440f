"""The OTLP forward exporter: re-encoding stored rows, delivery over gRPC and HTTP, retries.

The targets are real OTLP receivers on free ports (a gRPC server and an HTTP server speaking
OTLP/protobuf) that can be down, refuse, or fail, as a real backend would.
"""

from __future__ import annotations

import asyncio
import gzip
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.configparse import ConfigIssue, parse_dataclass
from collector.decode import decode
from collector.model import Rows, Signal
from collector.pipeline import process_payload
from collector.store.lake import StoreSettings
from collector.store.writer import Store
from exporters.otlp.encode import encode, from_record, to_record
from exporters.otlp.forward import OtlpExporter, OtlpExporterConfig, OtlpHttpExporterConfig
from tests.otlp_factory import kv, request_of


def _any(**kind: Any) -> AnyValue:
    return AnyValue(**kind)


def rich_traces() -> ExportTraceServiceRequest:
    req = request_of(20, seed=3)
    rs = req.resource_spans[0]
    rs.schema_url = "https://opentelemetry.io/schemas/1.26.0"
    rs.resource.attributes.extend(
        [
            kv("host.cores", 8),
            kv("ratio", 0.5),
            kv("on", True),
            KeyValue(key="tags", value=_any(array_value={"values": [_any(int_value=1)]})),
            KeyValue(
                key="nested",
                value=_any(
                    kvlist_value={"values": [KeyValue(key="a", value=_any(bool_value=False))]}
                ),
            ),
        ]
    )
    ss = rs.scope_spans[0]
    ss.scope.name, ss.scope.version = "my.lib", "1.2.3"
    ss.scope.attributes.append(kv("scope.attr", "x"))
    span = ss.spans[0]
    span.trace_state = "vendor=1"
    span.flags = 257
    span.status.code, span.status.message = 2, "boom"
    span.dropped_attributes_count = 3
    ev = span.events.add(name="exception", time_unix_nano=5)
    ev.attributes.append(kv("exception.type", "ValueError"))
    link = span.links.add(trace_id=b"\x07" * 16, span_id=b"\x08" * 8, trace_state="t=1")
    link.attributes.append(kv("link.kind", "parent-run"))
    return req


def rows_of(signal: Signal, message: Any) -> Rows:
    table, rejected = process_payload(signal, "acme", message.SerializeToString(), "protobuf", {})
    return Rows(signal, "acme", table, rejected)


def _same_after_round_trip(signal: Signal, message: Any) -> None:
    rows = rows_of(signal, message)
    back_signal, table = from_record(to_record(rows))
    assert back_signal is signal
    again = encode(signal, table).SerializeToString()
    first = decode(signal, "acme", message.SerializeToString(), "protobuf").columns
    second = decode(signal, "acme", again, "protobuf").columns
    for name in first:
        if name != "received_at":
            assert second[name] == first[name], name


def test_traces_round_trip_keeps_every_field() -> None:
    _same_after_round_trip(Signal.TRACES, rich_traces())


def test_logs_round_trip() -> None:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(kv("service.name", "svc"))
    sl = rl.scope_logs.add()
    sl.scope.name = "logger"
    rec = sl.log_records.add(time_unix_nano=10, severity_number=9, severity_text="INFO")
    rec.trace_id, rec.span_id, rec.event_name = b"\x01" * 16, b"\x02" * 8, "gen_ai.choice"
    rec.body.kvlist_value.values.append(KeyValue(key="content", value=_any(string_value="hi")))
    rec.attributes.append(kv("n", 3))
    sl.log_records.add(time_unix_nano=11).body.string_value = "plain"
    _same_after_round_trip(Signal.LOGS, req)


def test_metrics_round_trip() -> None:
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    sm.scope.name = "meter"
    gauge = sm.metrics.add(name="g", unit="1")
    gauge.gauge.data_points.add(time_unix_nano=5, as_double=1.5).attributes.append(kv("k", "v"))
    total = sm.metrics.add(name="tokens", description="tokens used")
    total.sum.is_monotonic, total.sum.aggregation_temporality = True, 2
    total.sum.data_points.add(time_unix_nano=6, as_int=42)
    hist = sm.metrics.add(name="latency")
    hist.histogram.aggregation_temporality = 1
    hist.histogram.data_points.add(count=3, sum=2.5, bucket_counts=[1, 2], explicit_bounds=[1.0])
    _same_after_round_trip(Signal.METRICS, req)


# -- real targets ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpTarget:
    """An OTLP/HTTP receiver: answers `statuses` in turn (then 200), keeps what it accepted."""

    def __init__(self, port: int, statuses: list[int] | None = None) -> None:
        self.received: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.statuses = list(statuses or [])
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                status = target.statuses.pop(0) if target.statuses else 200
                if status == 200:
                    target.received.append(ExportTraceServiceRequest.FromString(body))
                    target.headers.append(dict(self.headers))
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GrpcTarget:
    def __init__(self, port: int) -> None:
        self.received: list[Any] = []
        self.metadata: list[dict[str, str]] = []

        def export(request: Any, context: grpc.ServicerContext) -> Any:
            self.received.append(request)
            self.metadata.append(dict(context.invocation_metadata()))
            return (
                ExportTraceServiceResponse()
                if isinstance(request, ExportTraceServiceRequest)
                else ExportMetricsServiceResponse()
            )

        def handler(service: str, request_type: Any) -> grpc.GenericRpcHandler:
            method = grpc.unary_unary_rpc_method_handler(
                export,
                request_deserializer=request_type.FromString,
                response_serializer=lambda r: r.SerializeToString(),
            )
            return grpc.method_handlers_generic_handler(service, {"Export": method})

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers(
            (
                handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService", ExportTraceServiceRequest
                ),
                handler(
                    "opentelemetry.proto.collector.metrics.v1.MetricsService",
                    ExportMetricsServiceRequest,
                ),
            )
        )
        self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def close(self) -> None:
        self.server.stop(None)


def exporter(tmp: Path, kind: str, raw: dict[str, Any]) -> OtlpExporter:
    issues: list[ConfigIssue] = []
    cls = OtlpHttpExporterConfig if kind == "otlphttp" else OtlpExporterConfig
    retry = {"initial_interval": "50ms", "max_interval": "200ms"}
    config = parse_dataclass(cls, {"retry_on_failure": retry, **raw}, "exporters.x", issues)
    assert issues == []
    store = Store(StoreSettings(catalog=str(tmp / "catalog"), data_path=str(tmp / "data") + "/"))
    return OtlpExporter(kind, config, store)


def wait_for(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def span_ids(requests: list[Any]) -> list[bytes]:
    return [
        s.span_id
        for r in requests
        for rs in r.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]


@pytest.fixture
def port() -> Iterator[int]:
    yield free_port()


def test_http_target_down_then_up_gets_everything_once(tmp_path: Path, port: int) -> None:
    async def scenario() -> None:
        exp = exporter(
            tmp_path,
            "otlphttp",
            {"endpoint": f"http://127.0.0.1:{port}", "headers": {"Authorization": "Bearer t"}},
        )
        await exp.start()
        batches = [rows_of(Signal.TRACES, request_of(30, seed=i)) for i in range(5)]
        started = time.monotonic()
        for rows in batches:
            assert (await exp.export(rows)).accepted == 30
        assert time.monotonic() - started < 2.0  # the target being down costs ingest nothing
        await asyncio.sleep(0.3)
        assert exp.stats["send_failures"] >= 1
        target = HttpTarget(port, statuses=[503])
        try:
            await asyncio.to_thread(wait_for, lambda: len(target.received) == 5)
            await exp.shutdown()
        finally:
            target.close()
        ids = span_ids(target.received)
        assert len(ids) == len(set(ids)) == 150
        assert target.headers[0]["Authorization"] == "Bearer t"
        assert target.headers[0]["Content-Encoding"] == "gzip"
        assert exp.stats["sent_traces"] == 150
        assert "agentledger_forward_items_sent_total" in "\n".join(exp.metric_lines())

    asyncio.run(scenario())


def test_queued_batches_survive_a_restart(tmp_path: Path, port: int) -> None:
    async def scenario() -> None:
        endpoint = {"endpoint": f"127.0.0.1:{port}", "tls": {"insecure": True}}
        first = exporter(tmp_path, "otlp", endpoint)
        await first.start()
        for i in range(3):
            await first.export(rows_of(Signal.TRACES, request_of(10, seed=i)))
        await first.shutdown()
        target = GrpcTarget(port)
        try:
            second = exporter(tmp_path, "otlp", {**endpoint, "headers": {"X-Tenant": "acme"}})
            await second.start()
            await asyncio.to_thread(wait_for, lambda: len(target.received) == 3)
            await second.export(rows_of(Signal.TRACES, request_of(10, seed=9)))
            await asyncio.to_thread(wait_for, lambda: len(target.received) == 4)
            await second.shutdown()
        finally:
            target.close()
        assert len(set(span_ids(target.received))) == 40
        assert target.metadata[0]["x-tenant"] == "acme"

    asyncio.run(scenario())


def test_a_refused_batch_is_dropped_and_counted(tmp_path: Path, port: int) -> None:
    async def scenario() -> None:
        target = HttpTarget(port, statuses=[400])
        try:
            exp = exporter(tmp_path, "otlphttp", {"endpoint": f"http://127.0.0.1:{port}"})
            await exp.start()
            await exp.export(rows_of(Signal.TRACES, request_of(5, seed=1)))
            await exp.export(rows_of(Signal.TRACES, request_of(6, seed=2)))
            await asyncio.to_thread(wait_for, lambda: len(target.received) == 1)
            await exp.shutdown()
        finally:
            target.close()
        assert exp.stats["dropped_traces"] == 5
        assert len(span_ids(target.received)) == 6

    asyncio.run(scenario())


def test_metrics_go_over_grpc(tmp_path: Path, port: int) -> None:
    req = ExportMetricsServiceRequest()
    metric = req.resource_metrics.add().scope_metrics.add().metrics.add(name="m")
    metric.gauge.data_points.add(as_int=7)

    async def scenario() -> None:
        target = GrpcTarget(port)
        try:
            exp = exporter(tmp_path, "otlp", {"endpoint": f"http://127.0.0.1:{port}"})
            await exp.start()
            await exp.export(rows_of(Signal.METRICS, req))
            await asyncio.to_thread(wait_for, lambda: len(target.received) == 1)
            await exp.shutdown()
        finally:
            target.close()
        got = target.received[0].resource_metrics[0].scope_metrics[0].metrics[0]
        assert got.name == "m" and got.gauge.data_points[0].as_int == 7

    asyncio.run(scenario())


def test_config_shape() -> None:
    issues: list[ConfigIssue] = []
    parse_dataclass(
        OtlpHttpExporterConfig,
        {
            "endpoint": "localhost:4318",
            "timeout": "soon",
            "sending_queue": {"enabled": False, "queue_size": 0},
            "compression": "zstd",
        },
        "exporters.otlphttp",
        issues,
    )
    text = "\n".join(map(str, issues))
    assert "exporters.otlphttp.endpoint: must be an http:// or https:// URL" in text
    assert "exporters.otlphttp.timeout: expected a duration" in text
    assert "exporters.otlphttp.sending_queue.queue_size" in text
    assert "exporters.otlphttp.compression" in text
    assert "always queues on disk" in text
