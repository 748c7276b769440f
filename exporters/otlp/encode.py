"""Stored rows back to OTLP: queue records (Arrow IPC) and Export*ServiceRequest protobufs.

The forward exporter turns the pipeline's processed `Rows` into a compact record for its disk
queue; its sender rebuilds the OTLP request from the record (every attribute, resource, scope,
event and link the store keeps), so what is forwarded is what was committed, redacted.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.model import Rows, Signal
from collector.store.schema import LOG_COLUMNS, METRIC_COLUMNS, SPAN_CORE

_CODES = {Signal.TRACES: b"T", Signal.LOGS: b"L", Signal.METRICS: b"M"}
_SIGNALS = {v: k for k, v in _CODES.items()}
_OURS = {"org", "received_at", "span_key"}
COLUMNS: dict[Signal, list[str]] = {
    s: [c.name for c in cols if c.name not in _OURS]
    for s, cols in ((Signal.TRACES, SPAN_CORE), (Signal.LOGS, LOG_COLUMNS),
                    (Signal.METRICS, METRIC_COLUMNS))
}  # fmt: skip
_INT64 = (-(2**63), 2**63 - 1)


def to_record(rows: Rows) -> bytes:
    """The OTLP columns of `rows` as one queue record: a signal byte, then Arrow IPC."""
    assert rows.signal is not None
    table = rows.table.select(COLUMNS[rows.signal])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return _CODES[rows.signal] + data


def from_record(record: bytes) -> tuple[Signal, pa.Table]:
    return _SIGNALS[record[:1]], pa.ipc.open_stream(record[1:]).read_all()


def encode(signal: Signal, table: pa.Table) -> Message:
    """The Export*ServiceRequest carrying every row of `table`."""
    cols = table.to_pydict()
    if signal is Signal.TRACES:
        return _traces(cols, table.num_rows)
    if signal is Signal.LOGS:
        return _logs(cols, table.num_rows)
    return _metrics(cols, table.num_rows)


def set_any(av: Any, v: Any) -> None:
    """A JSON value as an OTLP AnyValue (the inverse of `collector.decode.any_value`)."""
    if isinstance(v, bool):
        av.bool_value = v
    elif isinstance(v, int):
        if _INT64[0] <= v <= _INT64[1]:
            av.int_value = v
        else:
            av.string_value = str(v)
    elif isinstance(v, float):
        av.double_value = v
    elif isinstance(v, str):
        av.string_value = v
    elif isinstance(v, list):
        values = av.array_value.values
        av.array_value.SetInParent()
        for x in v:
            set_any(values.add(), x)
    elif isinstance(v, dict):
        av.kvlist_value.SetInParent()
        set_attributes(av.kvlist_value.values, v)


def set_attributes(kvs: Any, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        set_any(kvs.add(key=key).value, value)


def _json(text: str | None, empty: Any) -> Any:
    return json.loads(text) if text else empty


class _Groups:
    """Resource → scope containers of one request, created on first use."""

    def __init__(self, resource_list: Any, scope_field: str) -> None:
        self._resources: dict[tuple[Any, ...], Any] = {}
        self._scopes: dict[tuple[Any, ...], Any] = {}
        self._list = resource_list
        self._scope_field = scope_field

    def scope(self, resource: tuple[Any, ...], scope: tuple[Any, ...]) -> Any:
        key = resource + scope
        found = self._scopes.get(key)
        if found is not None:
            return found
        parent = self._resources.get(resource)
        if parent is None:
            parent = self._resources[resource] = self._list.add()
            set_attributes(parent.resource.attributes, _json(resource[0], {}))
            if len(resource) > 1 and resource[1]:
                parent.schema_url = resource[1]
        found = self._scopes[key] = getattr(parent, self._scope_field).add()
        name, version, attrs = scope[:3]
        found.scope.name = name or ""
        found.scope.version = version or ""
        set_attributes(found.scope.attributes, _json(attrs, {}))
        if len(scope) > 3 and scope[3]:
            found.schema_url = scope[3]
        return found


def _traces(c: dict[str, list[Any]], n: int) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    groups = _Groups(req.resource_spans, "scope_spans")
    for i in range(n):
        ss = groups.scope(
            (c["resource_attributes"][i], c["resource_schema_url"][i]),
            (c["scope_name"][i], c["scope_version"][i], c["scope_attributes"][i],
             c["schema_url"][i]),
        )  # fmt: skip
        span = ss.spans.add(
            trace_id=bytes.fromhex(c["trace_id"][i]),
            span_id=bytes.fromhex(c["span_id"][i]),
            parent_span_id=bytes.fromhex(c["parent_span_id"][i] or ""),
            trace_state=c["trace_state"][i] or "",
            flags=c["flags"][i] or 0,
            name=c["name"][i] or "",
            kind=c["kind"][i] or 0,
            start_time_unix_nano=c["start_time_unix_nano"][i] or 0,
            end_time_unix_nano=c["end_time_unix_nano"][i] or 0,
            dropped_attributes_count=c["dropped_attributes_count"][i] or 0,
            dropped_events_count=c["dropped_events_count"][i] or 0,
            dropped_links_count=c["dropped_links_count"][i] or 0,
        )
        span.status.code = c["status_code"][i] or 0
        span.status.message = c["status_message"][i] or ""
        set_attributes(span.attributes, _json(c["attributes"][i], {}))
        for e in _json(c["events"][i], []):
            event = span.events.add(
                name=e.get("name") or "",
                time_unix_nano=e.get("time_unix_nano") or 0,
                dropped_attributes_count=e.get("dropped_attributes_count") or 0,
            )
            set_attributes(event.attributes, e.get("attributes") or {})
        for link in _json(c["links"][i], []):
            out = span.links.add(
                trace_id=bytes.fromhex(link.get("trace_id") or ""),
                span_id=bytes.fromhex(link.get("span_id") or ""),
                trace_state=link.get("trace_state") or "",
                flags=link.get("flags") or 0,
            )
            set_attributes(out.attributes, link.get("attributes") or {})
    return req


def _logs(c: dict[str, list[Any]], n: int) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    groups = _Groups(req.resource_logs, "scope_logs")
    for i in range(n):
        sl = groups.scope(
            (c["resource_attributes"][i], c["resource_schema_url"][i]),
            (c["scope_name"][i], c["scope_version"][i], c["scope_attributes"][i]),
        )
        rec = sl.log_records.add(
            time_unix_nano=c["time_unix_nano"][i] or 0,
            observed_time_unix_nano=c["observed_time_unix_nano"][i] or 0,
            severity_number=c["severity_number"][i] or 0,
            severity_text=c["severity_text"][i] or "",
            flags=c["flags"][i] or 0,
            trace_id=bytes.fromhex(c["trace_id"][i] or ""),
            span_id=bytes.fromhex(c["span_id"][i] or ""),
            event_name=c["event_name"][i] or "",
            dropped_attributes_count=c["dropped_attributes_count"][i] or 0,
        )
        body = _json(c["body"][i], None)
        if body is not None:
            set_any(rec.body, body)
        set_attributes(rec.attributes, _json(c["attributes"][i], {}))
    return req


def _metrics(c: dict[str, list[Any]], n: int) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    groups = _Groups(req.resource_metrics, "scope_metrics")
    metrics: dict[tuple[Any, ...], Any] = {}
    for i in range(n):
        resource = (c["resource_attributes"][i],)
        scope = (c["scope_name"][i], c["scope_version"][i], None)
        kind = c["metric_type"][i]
        key = resource + scope + tuple(
            c[k][i] for k in ("metric_name", "description", "unit", "metric_type",
                              "is_monotonic", "aggregation_temporality")
        )  # fmt: skip
        metric = metrics.get(key)
        if metric is None:
            sm = groups.scope(resource, scope)
            metric = metrics[key] = sm.metrics.add(
                name=c["metric_name"][i] or "",
                description=c["description"][i] or "",
                unit=c["unit"][i] or "",
            )
            data = getattr(metric, kind)
            data.SetInParent()
            if kind == "sum":
                data.is_monotonic = bool(c["is_monotonic"][i])
            if kind in ("sum", "histogram", "exponential_histogram"):
                data.aggregation_temporality = c["aggregation_temporality"][i] or 0
        point = getattr(metric, kind).data_points.add()
        json_format.ParseDict(_json(c["point"][i], {}), point, ignore_unknown_fields=True)
        set_attributes(point.attributes, _json(c["attributes"][i], {}))
    return req
