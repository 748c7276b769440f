"""Tests for the one decode path (`collector/decode.py`) on logs and metrics: OTLP protobuf and
OTLP/JSON of the same requests decode to equal columns, every body kind and point type filled.
"""

from __future__ import annotations

import base64
import json

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
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

from collector.decode import decode
from collector.model import Signal
from tests.collector.test_decode import BIG, NOW, SPAN, TRACE, _av, both, rich_attributes
from tests.otlp_factory import kv

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
