"""Tests for the decode limits and value ranges of `collector/decode.py`: attributes, events and
links past the limits are dropped and counted, long strings cut, times and counts past BIGINT
clamped, non-finite doubles written as OTLP/JSON writes them, and batches bounded in size."""

from __future__ import annotations

import json
import math

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from collector.decode import (
    CLAMPED_METRIC,
    DROPPED_METRIC,
    INT64_MAX,
    TRUNCATED_METRIC,
    DecodeLimits,
    decode,
    decode_batches,
)
from collector.model import Signal
from tests.collector.test_decode import NOW, SPAN, TRACE
from tests.otlp_factory import kv

LIMITS = DecodeLimits(attribute_count=3, attribute_value_length=5, event_count=2, link_count=1)


def _request() -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(kv(f"r{i}", i) for i in range(5))
    span = rs.scope_spans.add().spans.add(
        trace_id=TRACE,
        span_id=SPAN,
        name="a long span name",
        start_time_unix_nano=2**63,
        end_time_unix_nano=2**64 - 1,
        dropped_attributes_count=1,
        dropped_events_count=4,
    )
    span.attributes.extend([kv("text", "0123456789"), kv("inf", math.inf), kv("nan", math.nan)])
    span.attributes.extend(kv(f"more{i}", i) for i in range(4))
    nested = AnyValue()
    nested.array_value.values.extend(AnyValue(string_value="abcdefgh") for _ in range(6))
    for i in range(4):
        event = span.events.add(name=f"event{i}", time_unix_nano=2**64 - 1)
        event.attributes.add(key="list").value.CopyFrom(nested)
    for _ in range(3):
        span.links.add(trace_id=TRACE, span_id=SPAN)
    return req.SerializeToString()


def test_limits_drop_cut_and_count() -> None:
    batch = decode(Signal.TRACES, "acme", _request(), "protobuf", NOW, limits=LIMITS)
    cols = batch.columns
    assert cols["name"] == ["a lon"]
    assert batch.attributes == [{"text": "01234", "inf": "Infinity", "nan": "NaN"}]
    assert json.loads(cols["attributes"][0]) == batch.attributes[0]
    assert cols["dropped_attributes_count"] == [1 + 4]
    assert [e["name"] for e in batch.events[0]] == ["event", "event"]
    assert batch.events[0][0]["attributes"] == {"list": ["abcde"] * 3}
    assert batch.events[0][0]["time_unix_nano"] == INT64_MAX
    assert cols["dropped_events_count"] == [4 + 2]
    assert len(json.loads(cols["links"][0])) == 1 and cols["dropped_links_count"] == [2]
    assert len(batch.resources[0]) == 3
    assert (cols["start_time_unix_nano"], cols["end_time_unix_nano"]) == ([INT64_MAX], [INT64_MAX])
    assert batch.counters == {
        (TRUNCATED_METRIC, "signal", "traces"): 1 + 1 + 2 * 3 + 2,  # text, name, lists, events
        (DROPPED_METRIC, "what", "attributes"): 2 + 4 + 2 * 3,  # resource, span, lists
        (DROPPED_METRIC, "what", "events"): 2,
        (DROPPED_METRIC, "what", "links"): 2,
        (CLAMPED_METRIC, "signal", "traces"): 2 + 2,  # start, end, two event times
    }


def test_default_limits_keep_ordinary_spans_whole() -> None:
    batch = decode(Signal.TRACES, "acme", _request(), "protobuf", NOW)
    assert batch.columns["name"] == ["a long span name"]
    assert len(batch.attributes[0]) == 7 and len(batch.events[0]) == 4
    assert batch.counters == {(CLAMPED_METRIC, "signal", "traces"): 2 + 4}


def test_batches_are_bounded_and_together_hold_every_item() -> None:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    for i in range(100):
        spans.add(trace_id=TRACE, span_id=(i + 1).to_bytes(8, "big"), attributes=[kv("a", i)])
    batches = list(
        decode_batches(Signal.TRACES, "acme", req.SerializeToString(), "protobuf", max_elements=20)
    )
    assert [len(b) for b in batches] == [10] * 10 + [0]
    assert [a["a"] for b in batches for a in b.attributes] == list(range(100))
