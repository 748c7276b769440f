"""The one decode path: OTLP requests (protobuf, or OTLP/JSON mapped onto protobuf) → `Batch`es.

Receivers over gRPC and HTTP hand their payload bytes here (often inside a worker process);
the result goes to the processors and then to the store in the columns of `collector.store.schema`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from collector.model import Batch, MalformedPayload, Signal
from collector.store.keys import span_key

REQUEST_TYPES: dict[Signal, type[Message]] = {
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.LOGS: ExportLogsServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
}

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def any_value(v: AnyValue) -> Any:
    """An OTLP AnyValue as plain Python (bytes become base64 text, as in OTLP/JSON)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None


def attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        # Inline the common scalar cases: this loop is the hottest code in ingest.
        if kind == "string_value":
            out[kv.key] = v.string_value
        elif kind == "int_value":
            out[kv.key] = v.int_value
        elif kind == "bool_value":
            out[kv.key] = v.bool_value
        elif kind == "double_value":
            out[kv.key] = v.double_value
        else:
            out[kv.key] = any_value(v)
    return out


def parse_request(signal: Signal, payload: bytes, encoding: str) -> Message:
    """Parse an Export*ServiceRequest from protobuf bytes or OTLP/JSON text."""
    request = REQUEST_TYPES[signal]()
    if encoding == "protobuf":
        try:
            request.ParseFromString(payload)
        except (DecodeError, ValueError) as e:  # upb raises DecodeError; varint overflow ValueError
            raise MalformedPayload(f"invalid protobuf {request.DESCRIPTOR.name}: {e}") from e
        return request
    try:
        raw = json.loads(payload)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise MalformedPayload(f"invalid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise MalformedPayload("invalid OTLP/JSON: the body must be a JSON object")
    try:
        _hex_ids_to_base64(raw)
        json_format.ParseDict(raw, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as e:
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
    signal: Signal, org: str, payload: bytes, encoding: str, now: datetime | None = None
) -> Batch:
    """Decode one request into a batch of `signal` for `org`."""
    request = parse_request(signal, payload, encoding)
    received = now or datetime.now(UTC)
    return _DECODERS[signal](request, org, received)


def _resource(resource_message: Any) -> tuple[dict[str, Any], str, str | None]:
    attrs = attributes(resource_message.attributes)
    service = attrs.get("service.name")
    return attrs, _dumps(attrs), service if isinstance(service, str) else None


def _decode_traces(request: Any, org: str, received: datetime) -> Batch:
    cols: dict[str, list[Any]] = {
        name: []
        for name in (
            "trace_id span_id parent_span_id trace_state flags name kind start_time_unix_nano "
            "end_time_unix_nano status_code status_message service_name attributes "
            "resource_attributes resource_schema_url scope_name scope_version scope_attributes "
            "schema_url events links dropped_attributes_count dropped_events_count "
            "dropped_links_count"
        ).split()
    }
    span_attrs: list[dict[str, Any]] = []
    resources: list[dict[str, Any]] = []
    span_events: list[list[dict[str, Any]]] = []
    rejected = 0
    keys: list[int] = []
    # The dedup key is hashed here, in the decode worker, so the committing process only sorts.
    # Bound methods hoisted out of the loop: each span appends to ~25 lists.
    a = {k: v.append for k, v in cols.items()}
    for rs in request.resource_spans:
        res, res_json, service = _resource(rs.resource)
        for ss in rs.scope_spans:
            scope = ss.scope
            scope_attrs = _dumps(attributes(scope.attributes)) if len(scope.attributes) else "{}"
            for span in ss.spans:
                if (
                    len(span.trace_id) != 16
                    or len(span.span_id) != 8
                    or not any(span.trace_id)
                    or not any(span.span_id)
                ):
                    rejected += 1
                    continue
                attrs = attributes(span.attributes)
                keys.append(span_key(org, span.trace_id, span.span_id))
                events = [
                    {
                        "name": e.name,
                        "time_unix_nano": e.time_unix_nano,
                        "attributes": attributes(e.attributes),
                        "dropped_attributes_count": e.dropped_attributes_count,
                    }
                    for e in span.events
                ]
                a["trace_id"](span.trace_id.hex())
                a["span_id"](span.span_id.hex())
                a["parent_span_id"](span.parent_span_id.hex() or None)
                a["trace_state"](span.trace_state or None)
                a["flags"](span.flags)
                a["name"](span.name)
                a["kind"](span.kind)
                a["start_time_unix_nano"](span.start_time_unix_nano)
                a["end_time_unix_nano"](span.end_time_unix_nano)
                a["status_code"](span.status.code)
                a["status_message"](span.status.message or None)
                a["service_name"](service)
                a["attributes"](_dumps(attrs))
                a["resource_attributes"](res_json)
                a["resource_schema_url"](rs.schema_url or None)
                a["scope_name"](scope.name or None)
                a["scope_version"](scope.version or None)
                a["scope_attributes"](scope_attrs)
                a["schema_url"](ss.schema_url or None)
                a["events"](_dumps(events) if events else "[]")
                a["links"](_links(span.links) if len(span.links) else "[]")
                a["dropped_attributes_count"](span.dropped_attributes_count)
                a["dropped_events_count"](span.dropped_events_count)
                a["dropped_links_count"](span.dropped_links_count)
                span_attrs.append(attrs)
                resources.append(res)
                span_events.append(events)
    cols["org"] = [org] * len(span_attrs)
    cols["received_at"] = [received] * len(span_attrs)
    cols["span_key"] = keys
    batch = Batch(Signal.TRACES, org, cols, span_attrs, resources, span_events)
    batch.rejected = rejected
    return batch


def _links(links: Any) -> str:
    return _dumps(
        [
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                "trace_state": link.trace_state,
                "attributes": attributes(link.attributes),
                "flags": link.flags,
            }
            for link in links
        ]
    )


def _decode_logs(request: Any, org: str, received: datetime) -> Batch:
    cols: dict[str, list[Any]] = {
        name: []
        for name in (
            "time_unix_nano observed_time_unix_nano trace_id span_id flags severity_number "
            "severity_text event_name body attributes service_name resource_attributes "
            "resource_schema_url scope_name scope_version scope_attributes dropped_attributes_count"
        ).split()
    }
    log_attrs: list[dict[str, Any]] = []
    resources: list[dict[str, Any]] = []
    for rl in request.resource_logs:
        res, res_json, service = _resource(rl.resource)
        for sl in rl.scope_logs:
            scope = sl.scope
            scope_attrs = _dumps(attributes(scope.attributes))
            for rec in sl.log_records:
                attrs = attributes(rec.attributes)
                cols["time_unix_nano"].append(rec.time_unix_nano)
                cols["observed_time_unix_nano"].append(rec.observed_time_unix_nano)
                cols["trace_id"].append(rec.trace_id.hex() or None)
                cols["span_id"].append(rec.span_id.hex() or None)
                cols["flags"].append(rec.flags)
                cols["severity_number"].append(rec.severity_number)
                cols["severity_text"].append(rec.severity_text or None)
                cols["event_name"].append(rec.event_name or None)
                cols["body"].append(_dumps(any_value(rec.body)))
                cols["attributes"].append(_dumps(attrs))
                cols["service_name"].append(service)
                cols["resource_attributes"].append(res_json)
                cols["resource_schema_url"].append(rl.schema_url or None)
                cols["scope_name"].append(scope.name or None)
                cols["scope_version"].append(scope.version or None)
                cols["scope_attributes"].append(scope_attrs)
                cols["dropped_attributes_count"].append(rec.dropped_attributes_count)
                log_attrs.append(attrs)
                resources.append(res)
    cols["org"] = [org] * len(log_attrs)
    cols["received_at"] = [received] * len(log_attrs)
    return Batch(Signal.LOGS, org, cols, log_attrs, resources, [])


def _point_json(point: Message) -> dict[str, Any]:
    body: dict[str, Any] = json_format.MessageToDict(point, preserving_proto_field_name=True)
    body.pop("attributes", None)
    return body


def _decode_metrics(request: Any, org: str, received: datetime) -> Batch:
    cols: dict[str, list[Any]] = {
        name: []
        for name in (
            "metric_name description unit metric_type start_time_unix_nano time_unix_nano value "
            "count is_monotonic aggregation_temporality point attributes service_name "
            "resource_attributes scope_name scope_version"
        ).split()
    }
    point_attrs: list[dict[str, Any]] = []
    resources: list[dict[str, Any]] = []
    for rm in request.resource_metrics:
        res, res_json, service = _resource(rm.resource)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                data = getattr(metric, kind)
                value_of: Callable[[Any], tuple[float | None, int | None]] = _VALUE_OF[kind]
                for point in data.data_points:
                    attrs = attributes(point.attributes)
                    value, count = value_of(point)
                    cols["metric_name"].append(metric.name)
                    cols["description"].append(metric.description or None)
                    cols["unit"].append(metric.unit or None)
                    cols["metric_type"].append(kind)
                    cols["start_time_unix_nano"].append(point.start_time_unix_nano)
                    cols["time_unix_nano"].append(point.time_unix_nano)
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
                    cols["scope_name"].append(sm.scope.name or None)
                    cols["scope_version"].append(sm.scope.version or None)
                    point_attrs.append(attrs)
                    resources.append(res)
    cols["org"] = [org] * len(point_attrs)
    cols["received_at"] = [received] * len(point_attrs)
    return Batch(Signal.METRICS, org, cols, point_attrs, resources, [])


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

_DECODERS: dict[Signal, Callable[[Any, str, datetime], Batch]] = {
    Signal.TRACES: _decode_traces,
    Signal.LOGS: _decode_logs,
    Signal.METRICS: _decode_metrics,
}
