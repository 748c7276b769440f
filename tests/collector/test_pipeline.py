"""Tests for the pipeline's processing step (`collector/pipeline.py`): a batch that a processor
or the table build fails on is processed item by item, and only the failing items are refused,
with the reason; decoding and processing run a batch at a time."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.model import Batch, Signal
from collector.pipeline import process_counted
from tests.otlp_factory import kv


class _Poisoned:
    """A processor that trips on one span, and writes a value no BIGINT holds for another."""

    def process(self, batch: Batch) -> Batch:
        if any(a.get("i") == 3 for a in batch.attributes):
            raise ValueError("span 3 is poison")
        batch.set_column(
            "input_tokens", [2**70 if a.get("i") == 5 else 1 for a in batch.attributes]
        )
        return batch


def _payload(n: int) -> bytes:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    for i in range(n):
        spans.add(trace_id=b"\1" * 16, span_id=(i + 1).to_bytes(8, "big"), attributes=[kv("i", i)])
    spans.add(trace_id=b"\0" * 16, span_id=b"\1" * 8)  # no valid trace id
    return req.SerializeToString()


def test_only_the_items_that_fail_are_refused_with_the_reason() -> None:
    done = process_counted(
        Signal.TRACES, "acme", _payload(8), "protobuf", {Signal.TRACES: [_Poisoned()]}
    )
    table = done.table(Signal.TRACES)
    assert sorted(table.column("span_id").to_pylist()) == [
        (i + 1).to_bytes(8, "big").hex() for i in range(8) if i not in (3, 5)
    ]
    assert table.column("input_tokens").to_pylist() == [1] * 6
    assert done.rejected == 3
    message = done.message()
    assert "1 spans had no valid trace_id/span_id" in message
    assert "ValueError: span 3 is poison" in message and "OverflowError" in message


def test_a_clean_batch_is_processed_whole() -> None:
    done = process_counted(Signal.TRACES, "acme", _payload(4), "protobuf", {})
    assert done.table(Signal.TRACES).num_rows == 4 and len(done.tables) == 1
