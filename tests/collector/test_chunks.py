"""Tests for the wire-level splitter (`collector/chunks.py`): chunks decode to exactly the items
of the whole request, each chunk stays near the limit, and what it cannot cut stays whole."""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.chunks import split
from tests.otlp_factory import kv, request_of


def _spans(payloads: list[bytes]) -> list[tuple[str | None, str, bytes, str]]:
    out = []
    for payload in payloads:
        req = ExportTraceServiceRequest.FromString(payload)
        for rs in req.resource_spans:
            service = next(
                (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"),
                None,
            )
            for ss in rs.scope_spans:
                out += [(service, ss.scope.name, s.span_id, rs.schema_url) for s in ss.spans]
    return out


def test_chunks_hold_every_item_once_with_its_resource_and_scope() -> None:
    req = request_of(600, seed=1)
    second = req.resource_spans.add(schema_url="https://example.com/s")
    second.resource.attributes.append(kv("service.name", "other"))
    for i in range(300):
        second.scope_spans.add().spans.add(
            trace_id=b"\1" * 16, span_id=(i + 1).to_bytes(8, "big"), name="x" * 50
        )
    payload = req.SerializeToString()
    chunks = split(payload, 64 * 1024)
    assert len(chunks) > 5
    assert all(len(c) < 64 * 1024 + 4096 for c in chunks)
    assert _spans(chunks) == _spans([payload])


def test_small_unsplittable_and_single_item_payloads_stay_whole() -> None:
    small = request_of(8, seed=2).SerializeToString()
    assert split(small, 1 << 20) == [small]
    garbage = b"\xff" * 100_000
    assert split(garbage, 1000) == [garbage]
    one = ExportTraceServiceRequest()
    one.resource_spans.add().scope_spans.add().spans.add(name="n" * 100_000)
    body = one.SerializeToString()
    assert split(body, 1000)[0] is body


def test_logs_split_the_same_way() -> None:
    req = ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    for i in range(1000):
        records.add(time_unix_nano=i).body.string_value = f"log {i}" * 10
    chunks = split(req.SerializeToString(), 8 * 1024)
    times = [
        r.time_unix_nano
        for c in chunks
        for rl in ExportLogsServiceRequest.FromString(c).resource_logs
        for sl in rl.scope_logs
        for r in sl.log_records
    ]
    assert len(chunks) > 5 and times == list(range(1000))
