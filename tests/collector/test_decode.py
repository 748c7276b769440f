"""Tests for the one decode path (`collector/decode.py`): OTLP protobuf and OTLP/JSON → `Batch`.

Requests are built as protobuf messages, and the same requests are written as OTLP/JSON (hex
ids, integer enums, int64 as strings) both by hand and from the messages; the decoded columns
of both encodings must be equal, value for value.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Exemplar,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    SummaryDataPoint,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.decode import any_value, attributes, decode, parse_request
from collector.model import MalformedPayload, Signal
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


# -- logs ------------------------------------------------------------------------------------


def logs_request() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.schema_url = "https://opentelemetry.io/schemas/1.26.0"
    rl.resource.attributes.append(kv("service.name", "agent"))
    sl = rl.scope_logs.add()
    sl.scope.name = "logger"
    sl.scope.version = "2"
    sl.scope.attributes.append(kv("sa", 1))
    kvlist = AnyValue()
    kvlist.kvlist_value.values.append(KeyValue(key="prompt", value=_av(string_value="hi")))
    arr = AnyValue()
    arr.array_value.values.extend([_av(int_value=1), _av(string_value="two")])
    bodies = [
        _av(string_value="plain text"),
        kvlist,
        arr,
        _av(bytes_value=b"\x10\x20"),
        _av(int_value=BIG),
        AnyValue(),
    ]
    for i, body in enumerate(bodies):
        rec = sl.log_records.add(
            time_unix_nano=1_700_000_000_000_000_000 + i,
            observed_time_unix_nano=1_700_000_000_000_000_500 + i,
            severity_number=9 + i,
            severity_text="INFO" if i == 0 else "",
            flags=1,
            event_name="gen_ai.user.message" if i == 1 else "",
            dropped_attributes_count=i,
            body=body,
        )
        if i == 0:
            rec.trace_id, rec.span_id = TRACE, SPAN
        rec.attributes.extend(rich_attributes()[:2])
    return req


def test_logs_decode_every_column_and_body_kind() -> None:
    batch = decode(Signal.LOGS, "globex", logs_request().SerializeToString(), "protobuf", NOW)
    assert batch.signal is Signal.LOGS and len(batch) == 6
    cols = batch.columns
    assert cols["org"] == ["globex"] * 6
    assert [json.loads(b) for b in cols["body"]] == [
        "plain text",
        {"prompt": "hi"},
        [1, "two"],
        base64.b64encode(b"\x10\x20").decode(),
        BIG,
        None,
    ]
    assert cols["trace_id"] == [TRACE.hex(), None, None, None, None, None]
    assert cols["span_id"][0] == SPAN.hex() and cols["span_id"][1] is None
    assert cols["severity_number"] == [9, 10, 11, 12, 13, 14]
    assert cols["severity_text"] == ["INFO", None, None, None, None, None]
    assert cols["event_name"][:2] == [None, "gen_ai.user.message"]
    assert cols["time_unix_nano"][5] == 1_700_000_000_000_000_005
    assert cols["observed_time_unix_nano"][0] == 1_700_000_000_000_000_500
    assert cols["dropped_attributes_count"] == [0, 1, 2, 3, 4, 5]
    assert cols["service_name"] == ["agent"] * 6
    assert cols["resource_schema_url"][0] == "https://opentelemetry.io/schemas/1.26.0"
    assert (cols["scope_name"][0], cols["scope_version"][0]) == ("logger", "2")
    assert json.loads(cols["scope_attributes"][0]) == {"sa": 1}
    assert json.loads(cols["attributes"][0]) == {"s": "héllo", "i": BIG}
    assert batch.events == []


def test_json_and_protobuf_of_the_same_logs_decode_to_equal_columns() -> None:
    pb, js = both(Signal.LOGS, logs_request())
    assert len(js) == 6
    assert js.columns == pb.columns
    assert js.attributes == pb.attributes


# -- metrics ---------------------------------------------------------------------------------


def metrics_request() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", "agent"))
    sm = rm.scope_metrics.add()
    sm.scope.name = "meter"
    sm.scope.version = "0.1"
    delta = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    cumulative = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    t0, t1 = 1_700_000_000_000_000_000, 1_700_000_001_000_000_000

    gauge = Metric(name="queue.depth", description="items waiting", unit="{item}")
    gauge.gauge.data_points.extend(
        [
            NumberDataPoint(time_unix_nano=t1, as_int=BIG, attributes=[kv("q", "a")]),
            NumberDataPoint(time_unix_nano=t1, as_double=2.5, attributes=[kv("q", "b")]),
        ]
    )
    total = Metric(name="gen_ai.client.token.usage.total", unit="{token}")
    total.sum.is_monotonic = True
    total.sum.aggregation_temporality = cumulative
    total.sum.data_points.append(
        NumberDataPoint(
            start_time_unix_nano=t0,
            time_unix_nano=t1,
            as_int=1200,
            exemplars=[Exemplar(time_unix_nano=t1, as_int=3, trace_id=TRACE, span_id=SPAN)],
        )
    )
    hist = Metric(name="gen_ai.client.operation.duration", unit="s")
    hist.histogram.aggregation_temporality = delta
    hist.histogram.data_points.append(
        HistogramDataPoint(
            start_time_unix_nano=t0,
            time_unix_nano=t1,
            count=3,
            sum=4.5,
            bucket_counts=[1, 2, 0],
            explicit_bounds=[1.0, 5.0],
            min=0.5,
            max=3.0,
        )
    )
    hist_nosum = Metric(name="no.sum")
    hist_nosum.histogram.data_points.append(HistogramDataPoint(time_unix_nano=t1, count=2))
    expo = Metric(name="expo")
    expo.exponential_histogram.aggregation_temporality = delta
    point = ExponentialHistogramDataPoint(time_unix_nano=t1, count=4, sum=8.0, scale=2)
    point.positive.offset = 1
    point.positive.bucket_counts.extend([1, 3])
    expo.exponential_histogram.data_points.append(point)
    summary = Metric(name="latency.summary")
    sp = SummaryDataPoint(time_unix_nano=t1, count=10, sum=99.5)
    sp.quantile_values.add(quantile=0.5, value=9.0)
    summary.summary.data_points.append(sp)
    empty = Metric(name="no.data")  # no data kind at all: skipped
    sm.metrics.extend([gauge, total, hist, hist_nosum, expo, summary, empty])
    return req


def test_metrics_decode_every_point_type() -> None:
    batch = decode(Signal.METRICS, "acme", metrics_request().SerializeToString(), "protobuf", NOW)
    cols = batch.columns
    assert cols["metric_name"] == [
        "queue.depth",
        "queue.depth",
        "gen_ai.client.token.usage.total",
        "gen_ai.client.operation.duration",
        "no.sum",
        "expo",
        "latency.summary",
    ]
    assert cols["metric_type"] == [
        "gauge",
        "gauge",
        "sum",
        "histogram",
        "histogram",
        "exponential_histogram",
        "summary",
    ]
    assert cols["value"] == [float(BIG), 2.5, 1200.0, 4.5, None, 8.0, 99.5]
    assert cols["count"] == [None, None, None, 3, 2, 4, 10]
    assert cols["is_monotonic"] == [None, None, True, None, None, None, None]
    assert cols["aggregation_temporality"] == [None, None, 2, 1, 0, 1, None]
    assert cols["description"][:3] == ["items waiting", "items waiting", None]
    assert cols["unit"][:4] == ["{item}", "{item}", "{token}", "s"]
    assert cols["start_time_unix_nano"][2] == 1_700_000_000_000_000_000
    assert cols["time_unix_nano"][0] == 1_700_000_001_000_000_000
    assert [json.loads(a) for a in cols["attributes"][:3]] == [{"q": "a"}, {"q": "b"}, {}]
    assert cols["service_name"] == ["agent"] * 7
    assert (cols["scope_name"][0], cols["scope_version"][0]) == ("meter", "0.1")
    assert cols["org"] == ["acme"] * 7
    hist_point = json.loads(cols["point"][3])
    assert hist_point["bucket_counts"] == ["1", "2", "0"]
    assert hist_point["explicit_bounds"] == [1.0, 5.0]
    assert "attributes" not in json.loads(cols["point"][0])
    assert json.loads(cols["point"][6])["quantile_values"] == [{"quantile": 0.5, "value": 9.0}]
    exemplar = json.loads(cols["point"][2])["exemplars"][0]
    assert base64.b64decode(exemplar["trace_id"]) == TRACE


def test_json_and_protobuf_of_the_same_metrics_decode_to_equal_columns() -> None:
    pb, js = both(Signal.METRICS, metrics_request())
    assert len(js) == 7
    assert js.columns == pb.columns
    assert js.attributes == pb.attributes


# -- malformed payloads ----------------------------------------------------------------------

_SPAN_JSON = '{"resourceSpans":[{"scopeSpans":[{"spans":[%s]}]}]}'


@pytest.mark.parametrize(
    ("payload", "encoding", "message"),
    [
        (b"\x0a\x05\x0a\x03\x0a\x01", "protobuf", "invalid protobuf ExportTraceServiceRequest"),
        (b"\xff\xff\xff", "protobuf", "invalid protobuf"),
        (b"not json", "json", "invalid JSON"),
        (b"\xff\xfe\x00", "json", "invalid JSON"),
        (b'{"resourceSpans": [', "json", "invalid JSON"),
        (b"[]", "json", "must be a JSON object"),
        (b'"text"', "json", "must be a JSON object"),
        (b'{"resourceSpans": 5}', "json", "invalid OTLP/JSON"),
        ((_SPAN_JSON % '{"traceId": "zz"}').encode(), "json", "is not hex"),
        ((_SPAN_JSON % '{"traceId": 12}').encode(), "json", "invalid OTLP/JSON"),
        ((_SPAN_JSON % '{"startTimeUnixNano": "soon"}').encode(), "json", "invalid OTLP/JSON"),
        ((_SPAN_JSON % '{"name": 5}').encode(), "json", "invalid OTLP/JSON"),
        ((_SPAN_JSON % '{"attributes": {"a": 1}}').encode(), "json", "invalid OTLP/JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "json", "invalid JSON"),  # deeper than the stack
    ],
)
def test_malformed_payloads_raise_malformed_payload(
    payload: bytes, encoding: str, message: str
) -> None:
    with pytest.raises(MalformedPayload, match=message):
        decode(Signal.TRACES, "acme", payload, encoding, NOW)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field, written by hand (the Python API refuses to nest
    deeper than the parser accepts, so a too-deep message cannot be built with it)."""
    tag, size, n = number << 3 | 2, b"", len(payload)
    while True:
        byte, n = n & 0x7F, n >> 7
        size += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return bytes([tag]) + size + payload


def test_deeply_nested_values_are_malformed_not_a_crash() -> None:
    n = 5_000  # deeper than both protobuf's JSON parser and Python's stack allow
    deep = '{"arrayValue": {"values": [' * n + '{"stringValue": "x"}' + "]}}" * n
    span = f'{{"traceId": "{TRACE.hex()}", "spanId": "{SPAN.hex()}", '
    span += f'"attributes": [{{"key": "a", "value": {deep}}}]}}'
    with pytest.raises(MalformedPayload):
        decode(Signal.TRACES, "acme", (_SPAN_JSON % span).encode(), "json", NOW)

    value = _field(1, b"x")  # AnyValue.string_value
    for _ in range(200):
        value = _field(5, _field(1, value))  # AnyValue.array_value → ArrayValue.values
    key_value = _field(1, b"a") + _field(2, value)
    span_bytes = Span(trace_id=TRACE, span_id=SPAN).SerializeToString() + _field(9, key_value)
    payload = _field(1, _field(2, _field(2, span_bytes)))
    with pytest.raises(MalformedPayload):
        decode(Signal.TRACES, "acme", payload, "protobuf", NOW)
    # The same framing at a modest depth is accepted: the test's hand encoding is right.
    value = _field(1, b"x")
    for _ in range(3):
        value = _field(5, _field(1, value))
    span_bytes = Span(trace_id=TRACE, span_id=SPAN).SerializeToString()
    span_bytes += _field(9, _field(1, b"a") + _field(2, value))
    ok = decode(Signal.TRACES, "acme", _field(1, _field(2, _field(2, span_bytes))), "protobuf")
    assert ok.attributes == [{"a": [[["x"]]]}]


def test_parse_request_returns_the_message_of_the_signal() -> None:
    assert isinstance(parse_request(Signal.LOGS, b"{}", "json"), ExportLogsServiceRequest)
    assert isinstance(parse_request(Signal.METRICS, b"", "protobuf"), ExportMetricsServiceRequest)


def test_any_value_and_attributes_helpers() -> None:
    assert attributes(rich_attributes()) == RICH_DECODED
    assert any_value(AnyValue()) is None
    assert any_value(_av(bytes_value=b"")) == ""
    # A repeated key: the last one wins, as in a JSON object.
    assert attributes([kv("a", 1), kv("a", 2)]) == {"a": 2}
