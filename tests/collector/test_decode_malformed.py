"""Tests for the one decode path (`collector/decode.py`) on bad input and its helpers: malformed
protobuf and OTLP/JSON, values nested deeper than the parsers allow, and the value helpers.
"""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.decode import any_value, attributes, decode, parse_request
from collector.model import MalformedPayload, Signal
from tests.collector.test_decode import NOW, RICH_DECODED, SPAN, TRACE, _av, rich_attributes
from tests.otlp_factory import kv

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
