"""The one decode path: OTLP requests (protobuf, or OTLP/JSON mapped onto protobuf) → `Batch`es.

Receivers over gRPC and HTTP hand their payload bytes here (often inside a worker process);
the result goes to the processors and then to the store in the columns of `collector.store.schema`.
Values are read within `DecodeLimits` (as the OTel SDK's span limits), so what a request can make
decode allocate is bounded; what was cut or dropped is counted for /metrics.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from collector.model import Batch, Counters, MalformedPayload, Signal
from collector.store.keys import span_key

REQUEST_TYPES: dict[Signal, type[Message]] = {
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.LOGS: ExportLogsServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
}

INT64_MAX = 2**63 - 1
"""OTLP times and counts are unsigned 64-bit; the store's BIGINT holds up to this."""

TRUNCATED_METRIC = "agentledger_decode_truncated_values_total"
DROPPED_METRIC = "agentledger_decode_dropped_total"
CLAMPED_METRIC = "agentledger_decode_clamped_values_total"


def _dumps(value: Any) -> str:
    # orjson is ~5x faster than the stdlib encoder on attribute maps, the hottest serialisation
    # of ingest; it writes UTF-8 unescaped, as `ensure_ascii=False` did.
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class DecodeLimits:
    """Per-item bounds, named as the OTel SDK's span limits. Beyond them attributes, events and
    links are dropped (and added to the item's `dropped_*_count`), and strings and bytes are cut
    to `attribute_value_length` — span names, messages and log bodies included."""

    attribute_count: int = 1024
    attribute_value_length: int = 1024 * 1024
    event_count: int = 1024
    link_count: int = 1024


DEFAULT_LIMITS = DecodeLimits()
UNLIMITED = DecodeLimits(
    attribute_count=2**62, attribute_value_length=2**62, event_count=2**62, link_count=2**62
)

# A batch is handed on once it holds this many elements (items, attributes, events, links):
# decoding a request's worth of Python objects at once costs ~20x its wire size.
BATCH_ELEMENTS = 50_000


def _non_finite(d: float) -> str:
    """NaN and ±Infinity as OTLP/JSON writes them: strict JSON has no literal for them."""
    return "NaN" if math.isnan(d) else ("Infinity" if d > 0 else "-Infinity")


class _Reader:
    """Reads OTLP values into plain Python within the limits, counting what it cuts."""

    def __init__(self, limits: DecodeLimits) -> None:
        self.max_count = limits.attribute_count
        self.max_len = limits.attribute_value_length
        self.truncated = 0
        self.dropped_attributes = 0
        self.clamped = 0

    def cut(self, s: str) -> str:
        if len(s) <= self.max_len:
            return s
        self.truncated += 1
        return s[: self.max_len]

    def time(self, t: int) -> int:
        if t <= INT64_MAX:
            return t
        self.clamped += 1
        return INT64_MAX

    def over(self, n: int) -> int:
        """How many of `n` attributes are beyond the count limit."""
        return n - self.max_count if n > self.max_count else 0

    def attributes(self, kvs: Any) -> dict[str, Any]:
        n = len(kvs)
        if n > self.max_count:
            self.dropped_attributes += n - self.max_count
            kvs = kvs[: self.max_count]
        out: dict[str, Any] = {}
        max_len = self.max_len
        for kv in kvs:
            key = kv.key
            if len(key) > max_len:
                key = self.cut(key)
            v = kv.value
            kind = v.WhichOneof("value")
            # Inline the common scalar cases: this loop is the hottest code in ingest.
            if kind == "string_value":
                s = v.string_value
                out[key] = s if len(s) <= max_len else self.cut(s)
            elif kind == "int_value":
                out[key] = v.int_value
            elif kind == "bool_value":
                out[key] = v.bool_value
            elif kind == "double_value":
                d = v.double_value
                out[key] = d if d - d == 0.0 else _non_finite(d)  # inf - inf and NaN are NaN
            else:
                out[key] = self.any_value(v)
        return out

    def any_value(self, v: AnyValue) -> Any:
        """An OTLP AnyValue as plain Python (bytes become base64 text, as in OTLP/JSON)."""
        kind = v.WhichOneof("value")
        if kind == "string_value":
            return self.cut(v.string_value)
        if kind == "int_value":
            return v.int_value
        if kind == "double_value":
            d = v.double_value
            return d if d - d == 0.0 else _non_finite(d)
        if kind == "bool_value":
            return v.bool_value
        if kind == "array_value":
            values: Any = v.array_value.values
            if len(values) > self.max_count:
                self.dropped_attributes += len(values) - self.max_count
                values = values[: self.max_count]
            return [self.any_value(x) for x in values]
        if kind == "kvlist_value":
            return self.attributes(v.kvlist_value.values)
        if kind == "bytes_value":
            raw = v.bytes_value
            if len(raw) > self.max_len:
                self.truncated += 1
                raw = raw[: self.max_len]
            return base64.b64encode(raw).decode()
        return None

    def take_counts(self, signal: Signal, into: Counters) -> None:
        for metric, label, value, n in (
            (TRUNCATED_METRIC, "signal", signal.name.lower(), self.truncated),
            (DROPPED_METRIC, "what", "attributes", self.dropped_attributes),
            (CLAMPED_METRIC, "signal", signal.name.lower(), self.clamped),
        ):
            if n:
                into[(metric, label, value)] = into.get((metric, label, value), 0) + n
        self.truncated = self.dropped_attributes = self.clamped = 0


def any_value(v: AnyValue) -> Any:
    """An OTLP AnyValue as plain Python, without limits."""
    return _Reader(UNLIMITED).any_value(v)


def attributes(kvs: Any) -> dict[str, Any]:
    """OTLP KeyValues as a dict (a repeated key: the last one wins), without limits."""
    return _Reader(UNLIMITED).attributes(kvs)


def parse_request(signal: Signal, payload: bytes, encoding: str) -> Message:
    """Parse an Export*ServiceRequest from protobuf bytes or OTLP/JSON text.

    Whatever the parsers raise on a payload means the payload is bad (upb raises DecodeError,
    ValueError on a varint overflow; json_format raises ParseError, but also OverflowError for
    `Infinity` in an integer field and SystemError for a lone surrogate in an enum name), so
    every error but running out of memory is a `MalformedPayload`: never retried.
    """
    request = REQUEST_TYPES[signal]()
    if encoding == "protobuf":
        try:
            request.ParseFromString(payload)
        except MemoryError:
            raise
        except Exception as e:
            raise MalformedPayload(f"invalid protobuf {request.DESCRIPTOR.name}: {e}") from e
        return request
    try:
        raw = orjson.loads(payload)  # strict: no NaN/Infinity literals, no lone surrogates
    except orjson.JSONDecodeError as e:
        raise MalformedPayload(f"invalid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise MalformedPayload("invalid OTLP/JSON: the body must be a JSON object")
    try:
        _hex_ids_to_base64(raw)
        json_format.ParseDict(raw, request, ignore_unknown_fields=True)
    except MemoryError:
        raise
    except Exception as e:
        raise MalformedPayload(f"invalid OTLP/JSON {request.DESCRIPTOR.name}: {e}") from e
    return request


_ID_KEYS = frozenset(("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"))


def _hex_ids_to_base64(node: Any) -> None:
    """OTLP/JSON writes trace and span ids as hex, where proto3 JSON expects base64 for bytes."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError as e:
                    raise ValueError(f"{key} {value[:40]!r} is not hex") from e
            elif isinstance(value, dict | list):
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _hex_ids_to_base64(item)


def decode(
    signal: Signal,
    org: str,
    payload: bytes,
    encoding: str,
    now: datetime | None = None,
    *,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> Batch:
    """Decode one request into one batch of `signal` for `org`."""
    [batch] = decode_batches(signal, org, payload, encoding, now, limits=limits, max_elements=None)
    return batch


def decode_batches(
    signal: Signal,
    org: str,
    payload: bytes,
    encoding: str,
    now: datetime | None = None,
    *,
    limits: DecodeLimits = DEFAULT_LIMITS,
    max_elements: int | None = BATCH_ELEMENTS,
) -> Iterator[Batch]:
    """Decode one request into batches of at most about `max_elements` elements (None: one
    batch), so the Python objects of only one batch are alive at a time. At least one batch."""
    request = parse_request(signal, payload, encoding)
    received = now or datetime.now(UTC)
    decoder = _DECODERS[signal](org, received, _Reader(limits), limits)
    return decoder.run(request, max_elements or 2**62)


class _Columns:
    """The column lists of one batch being filled, and the batch they make."""

    def __init__(self, signal: Signal, names: list[str]) -> None:
        self.signal = signal
        self.names = names
        self.start()

    def start(self) -> None:
        self.cols: dict[str, list[Any]] = {name: [] for name in self.names}
        self.attrs: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.events: list[list[dict[str, Any]]] = []
        self.elements = 0

    def batch(self, org: str, received: datetime, rejected: int, counters: Counters) -> Batch:
        n = len(self.attrs)
        self.cols["org"] = [org] * n
        self.cols["received_at"] = [received] * n
        batch = Batch(self.signal, org, self.cols, self.attrs, self.resources, self.events)
        batch.rejected = rejected
        batch.counters = counters
        self.start()
        return batch


class _Decoder:
    signal: Signal
    names: str

    def __init__(self, org: str, received: datetime, reader: _Reader, limits: DecodeLimits):
        self.org = org
        self.received = received
        self.r = reader
        self.limits = limits
        self.out = _Columns(self.signal, self.names.split())
        self.rejected = 0
        self.counters: Counters = {}

    def flush(self) -> Batch:
        self.r.take_counts(self.signal, self.counters)
        batch = self.out.batch(self.org, self.received, self.rejected, self.counters)
        self.rejected = 0
        self.counters = {}
        return batch

    def count(self, what: str, n: int) -> None:
        if n:
            key = (DROPPED_METRIC, "what", what)
            self.counters[key] = self.counters.get(key, 0) + n

    def resource(self, resource_message: Any) -> tuple[dict[str, Any], str, str | None]:
        attrs = self.r.attributes(resource_message.attributes)
        service = attrs.get("service.name")
        return attrs, _dumps(attrs), service if isinstance(service, str) else None

    def scope(self, scope: Any) -> tuple[str | None, str | None, str]:
        attrs = _dumps(self.r.attributes(scope.attributes)) if len(scope.attributes) else "{}"
        return self.r.cut(scope.name) or None, self.r.cut(scope.version) or None, attrs

    def run(self, request: Any, max_elements: int) -> Iterator[Batch]:
        raise NotImplementedError


class _Traces(_Decoder):
    signal = Signal.TRACES
    names = (
        "trace_id span_id parent_span_id trace_state flags name kind start_time_unix_nano "
        "end_time_unix_nano status_code status_message service_name attributes "
        "resource_attributes resource_schema_url scope_name scope_version scope_attributes "
        "schema_url events links dropped_attributes_count dropped_events_count "
        "dropped_links_count span_key"
    )

    def run(self, request: Any, max_elements: int) -> Iterator[Batch]:
        r = self.r
        out = self.out
        # Bound methods hoisted out of the loop: each span appends to ~25 lists.
        a = {k: v.append for k, v in out.cols.items()}
        max_events, max_links = self.limits.event_count, self.limits.link_count
        for rs in request.resource_spans:
            res, res_json, service = self.resource(rs.resource)
            res_schema = r.cut(rs.schema_url) or None
            for ss in rs.scope_spans:
                scope_name, scope_version, scope_attrs = self.scope(ss.scope)
                schema = r.cut(ss.schema_url) or None
                for span in ss.spans:
                    if (
                        len(span.trace_id) != 16
                        or len(span.span_id) != 8
                        or not any(span.trace_id)
                        or not any(span.span_id)
                    ):
                        self.rejected += 1
                        continue
                    attrs = r.attributes(span.attributes)
                    events, dropped_events = self.events(span.events, max_events)
                    links, dropped_links = self.links(span.links, max_links)
                    # The dedup key is hashed here, in the decode worker, so the committing
                    # process only sorts.
                    a["span_key"](span_key(self.org, span.trace_id, span.span_id))
                    a["trace_id"](span.trace_id.hex())
                    a["span_id"](span.span_id.hex())
                    a["parent_span_id"](span.parent_span_id.hex() or None)
                    a["trace_state"](r.cut(span.trace_state) or None)
                    a["flags"](span.flags)
                    a["name"](r.cut(span.name))
                    a["kind"](span.kind)
                    a["start_time_unix_nano"](r.time(span.start_time_unix_nano))
                    a["end_time_unix_nano"](r.time(span.end_time_unix_nano))
                    a["status_code"](span.status.code)
                    a["status_message"](r.cut(span.status.message) or None)
                    a["service_name"](service)
                    a["attributes"](_dumps(attrs))
                    a["resource_attributes"](res_json)
                    a["resource_schema_url"](res_schema)
                    a["scope_name"](scope_name)
                    a["scope_version"](scope_version)
                    a["scope_attributes"](scope_attrs)
                    a["schema_url"](schema)
                    a["events"](_dumps(events) if events else "[]")
                    a["links"](_dumps(links) if links else "[]")
                    a["dropped_attributes_count"](
                        span.dropped_attributes_count + r.over(len(span.attributes))
                    )
                    a["dropped_events_count"](span.dropped_events_count + dropped_events)
                    a["dropped_links_count"](span.dropped_links_count + dropped_links)
                    out.attrs.append(attrs)
                    out.resources.append(res)
                    out.events.append(events)
                    out.elements += 1 + len(attrs) + len(events) + len(links)
                    if out.elements >= max_elements:
                        yield self.flush()
                        a = {k: v.append for k, v in out.cols.items()}
        yield self.flush()

    def events(self, events: Any, limit: int) -> tuple[list[dict[str, Any]], int]:
        if not len(events):
            return [], 0
        r = self.r
        dropped = len(events) - limit if len(events) > limit else 0
        if dropped:
            self.count("events", dropped)
            events = events[:limit]
        return [
            {
                "name": r.cut(e.name),
                "time_unix_nano": r.time(e.time_unix_nano),
                "attributes": r.attributes(e.attributes),
                "dropped_attributes_count": e.dropped_attributes_count + r.over(len(e.attributes)),
            }
            for e in events
        ], dropped

    def links(self, links: Any, limit: int) -> tuple[list[dict[str, Any]], int]:
        if not len(links):
            return [], 0
        r = self.r
        dropped = len(links) - limit if len(links) > limit else 0
        if dropped:
            self.count("links", dropped)
            links = links[:limit]
        return [
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                "trace_state": r.cut(link.trace_state),
                "attributes": r.attributes(link.attributes),
                "flags": link.flags,
            }
            for link in links
        ], dropped


class _Logs(_Decoder):
    signal = Signal.LOGS
    names = (
        "time_unix_nano observed_time_unix_nano trace_id span_id flags severity_number "
        "severity_text event_name body attributes service_name resource_attributes "
        "resource_schema_url scope_name scope_version scope_attributes dropped_attributes_count"
    )

    def run(self, request: Any, max_elements: int) -> Iterator[Batch]:
        r = self.r
        out = self.out
        for rl in request.resource_logs:
            res, res_json, service = self.resource(rl.resource)
            res_schema = r.cut(rl.schema_url) or None
            for sl in rl.scope_logs:
                scope_name, scope_version, scope_attrs = self.scope(sl.scope)
                for rec in sl.log_records:
                    cols = out.cols
                    attrs = r.attributes(rec.attributes)
                    cols["time_unix_nano"].append(r.time(rec.time_unix_nano))
                    cols["observed_time_unix_nano"].append(r.time(rec.observed_time_unix_nano))
                    cols["trace_id"].append(rec.trace_id.hex() or None)
                    cols["span_id"].append(rec.span_id.hex() or None)
                    cols["flags"].append(rec.flags)
                    cols["severity_number"].append(rec.severity_number)
                    cols["severity_text"].append(r.cut(rec.severity_text) or None)
                    cols["event_name"].append(r.cut(rec.event_name) or None)
                    cols["body"].append(_dumps(r.any_value(rec.body)))
                    cols["attributes"].append(_dumps(attrs))
                    cols["service_name"].append(service)
                    cols["resource_attributes"].append(res_json)
                    cols["resource_schema_url"].append(res_schema)
                    cols["scope_name"].append(scope_name)
                    cols["scope_version"].append(scope_version)
                    cols["scope_attributes"].append(scope_attrs)
                    cols["dropped_attributes_count"].append(
                        rec.dropped_attributes_count + r.over(len(rec.attributes))
                    )
                    out.attrs.append(attrs)
                    out.resources.append(res)
                    out.elements += 1 + len(attrs)
                    if out.elements >= max_elements:
                        yield self.flush()
        yield self.flush()


class _Metrics(_Decoder):
    signal = Signal.METRICS
    names = (
        "metric_name description unit metric_type start_time_unix_nano time_unix_nano value "
        "count is_monotonic aggregation_temporality point attributes service_name "
        "resource_attributes scope_name scope_version"
    )

    def run(self, request: Any, max_elements: int) -> Iterator[Batch]:
        r = self.r
        out = self.out
        for rm in request.resource_metrics:
            res, res_json, service = self.resource(rm.resource)
            for sm in rm.scope_metrics:
                scope_name, scope_version, _ = self.scope(sm.scope)
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is None:
                        continue
                    data = getattr(metric, kind)
                    value_of: Callable[[Any], tuple[float | None, int | None]] = _VALUE_OF[kind]
                    name, description = r.cut(metric.name), r.cut(metric.description) or None
                    unit = r.cut(metric.unit) or None
                    for point in data.data_points:
                        cols = out.cols
                        attrs = r.attributes(point.attributes)
                        value, count = value_of(point)
                        if count is not None and count > INT64_MAX:
                            count = r.time(count)  # a count past BIGINT: clamped likewise
                        cols["metric_name"].append(name)
                        cols["description"].append(description)
                        cols["unit"].append(unit)
                        cols["metric_type"].append(kind)
                        cols["start_time_unix_nano"].append(r.time(point.start_time_unix_nano))
                        cols["time_unix_nano"].append(r.time(point.time_unix_nano))
                        cols["value"].append(value)
                        cols["count"].append(count)
                        cols["is_monotonic"].append(data.is_monotonic if kind == "sum" else None)
                        cols["aggregation_temporality"].append(
                            getattr(data, "aggregation_temporality", None)
                        )
                        cols["point"].append(_dumps(_point_json(point)))
                        cols["attributes"].append(_dumps(attrs))
                        cols["service_name"].append(service)
                        cols["resource_attributes"].append(res_json)
                        cols["scope_name"].append(scope_name)
                        cols["scope_version"].append(scope_version)
                        out.attrs.append(attrs)
                        out.resources.append(res)
                        out.elements += 1 + len(attrs)
                        if out.elements >= max_elements:
                            yield self.flush()
        yield self.flush()


def _point_json(point: Message) -> dict[str, Any]:
    body: dict[str, Any] = json_format.MessageToDict(point, preserving_proto_field_name=True)
    body.pop("attributes", None)
    return body


def _number(point: Any) -> tuple[float | None, int | None]:
    which = point.WhichOneof("value")
    if which == "as_int":
        return float(point.as_int), None
    if which == "as_double":
        return point.as_double, None
    return None, None


def _distribution(point: Any) -> tuple[float | None, int | None]:
    return (point.sum if point.HasField("sum") else None), point.count


def _summary(point: Any) -> tuple[float | None, int | None]:
    return point.sum, point.count


_VALUE_OF: dict[str, Callable[[Any], tuple[float | None, int | None]]] = {
    "gauge": _number,
    "sum": _number,
    "histogram": _distribution,
    "exponential_histogram": _distribution,
    "summary": _summary,
}

_DECODERS: dict[Signal, type[_Decoder]] = {
    Signal.TRACES: _Traces,
    Signal.LOGS: _Logs,
    Signal.METRICS: _Metrics,
}
