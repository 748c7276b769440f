"""Tests for the one decode path (`collector/decode.py`) on traces: OTLP protobuf and OTLP/JSON →
`Batch`; logs and metrics are in `test_decode_logs_metrics.py`, bad input in `_malformed.py`.

Requests are built as protobuf messages, and the same requests are written as OTLP/JSON (hex
ids, integer enums, int64 as strings) both by hand and from the messages; the decoded columns
of both encodings must be equal, value for value. The helpers here serve the other two files.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.decode import decode
from collector.model import Signal
from tests.otlp_factory import kv

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("eee19b7ec3c1b173")
LINKED_TRACE = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
LINKED_SPAN = bytes.fromhex("1112131415161718")
BIG = 9_007_199_254_740_993  # 2**53 + 1: survives only if int64 is carried as a string


def _av(**kw: Any) -> AnyValue:
    return AnyValue(**kw)


def rich_attributes() -> list[KeyValue]:
    """Every AnyValue kind, nested."""
    inner = AnyValue()
    inner.kvlist_value.values.extend(
        [KeyValue(key="k", value=_av(string_value="v")), KeyValue(key="n", value=_av(int_value=7))]
    )
    arr = AnyValue()
    arr.array_value.values.extend(
        [_av(string_value="a"), _av(int_value=2), _av(bool_value=False), _av(double_value=0.5)]
    )
    return [
        KeyValue(key="s", value=_av(string_value="héllo")),
        KeyValue(key="i", value=_av(int_value=BIG)),
        KeyValue(key="neg", value=_av(int_value=-3)),
        KeyValue(key="d", value=_av(double_value=1.25)),
        KeyValue(key="b", value=_av(bool_value=True)),
        KeyValue(key="bytes", value=_av(bytes_value=b"\x00\x01\xff")),
        KeyValue(key="arr", value=arr),
        KeyValue(key="kv", value=inner),
        KeyValue(key="empty", value=AnyValue()),
    ]


RICH_DECODED = {
    "s": "héllo",
    "i": BIG,
    "neg": -3,
    "d": 1.25,
    "b": True,
    "bytes": base64.b64encode(b"\x00\x01\xff").decode(),
    "arr": ["a", 2, False, 0.5],
    "kv": {"k": "v", "n": 7},
    "empty": None,
}


def trace_request() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.schema_url = "https://opentelemetry.io/schemas/1.26.0"
    rs.resource.attributes.extend([kv("service.name", "checkout"), kv("host.name", "w1")])
    ss = rs.scope_spans.add()
    ss.schema_url = "https://opentelemetry.io/schemas/1.25.0"
    ss.scope.name = "my.library"
    ss.scope.version = "1.0.0"
    ss.scope.attributes.append(kv("my.scope.attribute", "scoped"))
    span = ss.spans.add(
        trace_id=TRACE,
        span_id=SPAN,
        parent_span_id=PARENT,
        trace_state="vendor=1",
        flags=257,
        name="chat gpt-4o",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=1_544_712_660_000_000_000,
        end_time_unix_nano=1_544_712_661_000_000_000,
        dropped_attributes_count=1,
        dropped_events_count=2,
        dropped_links_count=3,
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
    )
    span.attributes.extend(rich_attributes())
    ev = span.events.add(name="exception", time_unix_nano=1_544_712_660_500_000_000)
    ev.attributes.append(kv("exception.type", "ValueError"))
    ev.dropped_attributes_count = 4
    link = span.links.add(trace_id=LINKED_TRACE, span_id=LINKED_SPAN, trace_state="x=y", flags=1)
    link.attributes.append(kv("link.kind", "retry"))
    # A second span in another resource without service.name, scope without attributes.
    rs2 = req.resource_spans.add()
    rs2.scope_spans.add().spans.add(
        trace_id=TRACE, span_id=PARENT, name="root", kind=Span.SPAN_KIND_SERVER
    )
    return req


def _hexify(node: Any) -> Any:
    """proto3 JSON writes bytes ids as base64; OTLP/JSON writes them as hex."""
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
    """OTLP/JSON of a message as an SDK writes it: hex ids, integer enums, int64 as strings."""
    body = json_format.MessageToDict(message, use_integers_for_enums=True)
    return json.dumps(_hexify(body)).encode()


def both(signal: Signal, message: Message) -> tuple[Any, Any]:
    pb = decode(signal, "acme", message.SerializeToString(), "protobuf", NOW)
    js = decode(signal, "acme", otlp_json(message), "json", NOW)
    return pb, js


# -- traces ----------------------------------------------------------------------------------


def test_protobuf_span_fills_every_column() -> None:
    batch = decode(Signal.TRACES, "acme", trace_request().SerializeToString(), "protobuf", NOW)
    assert batch.signal is Signal.TRACES and batch.org == "acme"
    assert len(batch) == 2 and batch.rejected == 0
    c = {k: v[0] for k, v in batch.columns.items()}
    assert c["org"] == "acme"
    assert c["received_at"] == NOW
    assert c["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert c["span_id"] == "eee19b7ec3c1b174"
    assert c["parent_span_id"] == "eee19b7ec3c1b173"
    assert c["trace_state"] == "vendor=1"
    assert c["flags"] == 257
    assert c["name"] == "chat gpt-4o"
    assert c["kind"] == 3
    assert c["start_time_unix_nano"] == 1_544_712_660_000_000_000
    assert c["end_time_unix_nano"] == 1_544_712_661_000_000_000
    assert (c["status_code"], c["status_message"]) == (2, "boom")
    assert c["service_name"] == "checkout"
    assert json.loads(c["attributes"]) == RICH_DECODED
    assert json.loads(c["resource_attributes"]) == {"service.name": "checkout", "host.name": "w1"}
    assert c["resource_schema_url"] == "https://opentelemetry.io/schemas/1.26.0"
    assert c["schema_url"] == "https://opentelemetry.io/schemas/1.25.0"
    assert (c["scope_name"], c["scope_version"]) == ("my.library", "1.0.0")
    assert json.loads(c["scope_attributes"]) == {"my.scope.attribute": "scoped"}
    assert json.loads(c["events"]) == [
        {
            "name": "exception",
            "time_unix_nano": 1_544_712_660_500_000_000,
            "attributes": {"exception.type": "ValueError"},
            "dropped_attributes_count": 4,
        }
    ]
    assert json.loads(c["links"]) == [
        {
            "trace_id": LINKED_TRACE.hex(),
            "span_id": LINKED_SPAN.hex(),
            "trace_state": "x=y",
            "attributes": {"link.kind": "retry"},
            "flags": 1,
        }
    ]
    assert (
        c["dropped_attributes_count"],
        c["dropped_events_count"],
        c["dropped_links_count"],
    ) == (1, 2, 3)
    # The parsed views processors read agree with the JSON columns.
    assert batch.attributes[0] == RICH_DECODED
    assert batch.resources[0] == {"service.name": "checkout", "host.name": "w1"}
    assert batch.events[0][0]["name"] == "exception"


def test_second_span_defaults_are_nulls_not_empty_strings() -> None:
    batch = decode(Signal.TRACES, "acme", trace_request().SerializeToString(), "protobuf", NOW)
    c = {k: v[1] for k, v in batch.columns.items()}
    assert c["span_id"] == PARENT.hex()
    assert c["parent_span_id"] is None
    assert c["trace_state"] is None
    assert c["status_message"] is None
    assert c["service_name"] is None
    assert c["scope_name"] is None and c["scope_version"] is None
    assert c["resource_schema_url"] is None and c["schema_url"] is None
    assert (c["attributes"], c["resource_attributes"], c["scope_attributes"]) == ("{}", "{}", "{}")
    assert (c["events"], c["links"]) == ("[]", "[]")
    assert c["kind"] == 2 and c["status_code"] == 0
    assert batch.events[1] == []


def test_json_and_protobuf_of_the_same_traces_decode_to_equal_columns() -> None:
    pb, js = both(Signal.TRACES, trace_request())
    assert len(pb) == len(js) == 2
    assert js.columns == pb.columns
    assert js.attributes == pb.attributes
    assert js.resources == pb.resources
    assert js.events == pb.events


def test_hand_written_otlp_json_like_the_spec_example() -> None:
    # Uppercase hex ids, integer enums, int64 both as string and as number, unknown fields.
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]
                },
                "futureField": {"anything": [1, 2]},
                "scopeSpans": [
                    {
                        "scope": {"name": "my.library", "version": "1.0.0"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "parentSpanId": "EEE19B7EC3C1B173",
                                "name": "I'm a server span",
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": 1544712661000000000,
                                "kind": 2,
                                "flags": 1,
                                "unknownSpanField": "ignored",
                                "status": {"code": 2, "message": "bad"},
                                "attributes": [
                                    {"key": "my.span.attr", "value": {"stringValue": "some value"}},
                                    {"key": "n", "value": {"intValue": "9007199254740993"}},
                                    {"key": "m", "value": {"intValue": 12}},
                                    {"key": "raw", "value": {"bytesValue": "AAH/"}},
                                ],
                                "events": [
                                    {
                                        "timeUnixNano": "1544712660500000000",
                                        "name": "ev",
                                        "attributes": [{"key": "x", "value": {"boolValue": True}}],
                                    }
                                ],
                                "links": [
                                    {
                                        "traceId": LINKED_TRACE.hex(),
                                        "spanId": LINKED_SPAN.hex(),
                                    }
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    batch = decode(Signal.TRACES, "acme", json.dumps(body).encode(), "json", NOW)
    assert len(batch) == 1 and batch.rejected == 0
    c = {k: v[0] for k, v in batch.columns.items()}
    assert c["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert c["span_id"] == "eee19b7ec3c1b174"
    assert c["parent_span_id"] == "eee19b7ec3c1b173"
    assert c["kind"] == 2 and c["flags"] == 1
    assert c["start_time_unix_nano"] == 1_544_712_660_000_000_000
    assert c["end_time_unix_nano"] == 1_544_712_661_000_000_000
    assert (c["status_code"], c["status_message"]) == (2, "bad")
    assert c["service_name"] == "my.service"
    assert json.loads(c["attributes"]) == {
        "my.span.attr": "some value",
        "n": BIG,
        "m": 12,
        "raw": "AAH/",
    }
    assert json.loads(c["events"])[0]["time_unix_nano"] == 1_544_712_660_500_000_000
    assert json.loads(c["events"])[0]["attributes"] == {"x": True}
    link = json.loads(c["links"])[0]
    assert (link["trace_id"], link["span_id"]) == (LINKED_TRACE.hex(), LINKED_SPAN.hex())


def test_string_enum_names_are_accepted_in_json_and_unknown_ones_ignored() -> None:
    body = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE.hex(),
                                "spanId": SPAN.hex(),
                                "kind": "SPAN_KIND_CONSUMER",
                                "status": {"code": "STATUS_CODE_OK"},
                            },
                            {
                                "traceId": TRACE.hex(),
                                "spanId": PARENT.hex(),
                                "kind": "SPAN_KIND_FROM_THE_FUTURE",
                            },
                        ]
                    }
                ]
            }
        ]
    }
    batch = decode(Signal.TRACES, "acme", json.dumps(body).encode(), "json", NOW)
    assert batch.columns["kind"] == [5, 0]
    assert batch.columns["status_code"] == [1, 0]


@pytest.mark.parametrize(
    ("trace_id", "span_id"),
    [
        (b"\x00" * 16, SPAN),  # all-zero trace id
        (TRACE, b"\x00" * 8),  # all-zero span id
        (b"", SPAN),  # missing trace id
        (TRACE, b""),  # missing span id
        (TRACE[:8], SPAN),  # trace id of the wrong length
        (TRACE, SPAN + b"\x01"),  # span id of the wrong length
    ],
)
def test_spans_with_invalid_ids_are_rejected_one_by_one(trace_id: bytes, span_id: bytes) -> None:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    spans.add(trace_id=TRACE, span_id=SPAN, name="good-1")
    spans.add(trace_id=trace_id, span_id=span_id, name="bad")
    spans.add(trace_id=TRACE, span_id=PARENT, name="good-2")
    pb, js = both(Signal.TRACES, req)
    for batch in (pb, js):
        assert batch.rejected == 1
        assert batch.columns["name"] == ["good-1", "good-2"]
        assert len(batch) == 2 and len(batch.resources) == 2 and len(batch.events) == 2
        assert all(len(v) == 2 for v in batch.columns.values())


def test_empty_request_is_an_empty_batch() -> None:
    for signal in Signal:
        for payload, encoding in ((b"", "protobuf"), (b"{}", "json")):
            batch = decode(signal, "acme", payload, encoding, NOW)
            assert len(batch) == 0 and batch.rejected == 0
            assert batch.columns["org"] == [] and batch.columns["received_at"] == []
