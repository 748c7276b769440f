"""Helpers shared by the end-to-end OTLP tests: requests of each signal, OTLP/JSON.

Requests are small, deterministic OTLP messages (ids derived from a seed) so a test can say
exactly which rows the store must hold afterwards.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.otlp_factory import kv

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def trace_id(seed: int) -> bytes:
    return (0x1000 + seed).to_bytes(16, "big")


def span_id(seed: int, i: int) -> bytes:
    return ((seed << 20) + i + 1).to_bytes(8, "big")


def spans_request(
    service: str, n: int = 3, seed: int = 0, bad: int = 0, first: int = 0
) -> ExportTraceServiceRequest:
    """`n` valid spans of one trace (span ids `first`.. of `seed`), then `bad` spans with an
    all-zero trace id (which the collector rejects one by one)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", service))
    ss = rs.scope_spans.add()
    ss.scope.name = "e2e"
    for i in range(first, first + n):
        ss.spans.add(
            trace_id=trace_id(seed),
            span_id=span_id(seed, i),
            name=f"{service} span {i}",
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=1_700_000_000_000_000_000 + i,
            end_time_unix_nano=1_700_000_000_500_000_000 + i,
            attributes=[kv("i", i), kv("gen_ai.operation.name", "chat")],
        )
    for i in range(bad):
        ss.spans.add(trace_id=b"\x00" * 16, span_id=span_id(seed, 10_000 + i), name="bad")
    return req


def logs_request(service: str, n: int = 2) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(kv("service.name", service))
    records = rl.scope_logs.add().log_records
    for i in range(n):
        rec = records.add(time_unix_nano=1_700_000_000_000_000_000 + i, severity_number=9)
        rec.body.string_value = f"{service} log {i}"
    return req


def metrics_request(service: str, value: int = 42) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", service))
    metric = rm.scope_metrics.add().metrics.add(name="gen_ai.client.token.usage", unit="{token}")
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = 2
    metric.sum.data_points.add(time_unix_nano=1_700_000_000_000_000_000, as_int=value)
    metric.sum.data_points.add(time_unix_nano=1_700_000_001_000_000_000, as_int=value + 1)
    return req


def _hexify(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                base64.b64decode(v).hex()
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
                else _hexify(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hexify(x) for x in node]
    return node


def otlp_json(message: Message) -> bytes:
    """OTLP/JSON as SDKs write it: hex ids, integer enums, int64 as strings."""
    body = json_format.MessageToDict(message, use_integers_for_enums=True)
    return json.dumps(_hexify(body)).encode()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")
