"""Tests for admission control (`collector/admission.py`): the memory bound with its retryable
and permanent refusals, the item bound, and refusal by the expected wait."""

from __future__ import annotations

import pytest

from collector.admission import MIN_QUEUE, Admission, Limits, Throughput
from collector.model import Overloaded, TooLarge
from collector.telemetry import Metrics

MIB = 1024 * 1024
LABELS = {"transport": "http", "signal": "traces"}


def test_memory_is_held_while_decoding_then_for_the_rows() -> None:
    a = Admission(Limits(max_queue_bytes=10 * MIB), Metrics())
    first = a.admit(2 * MIB, "protobuf", LABELS)
    assert a.held_bytes == 6 * MIB  # payload x3 while it is decoded
    first.part_decoded(2 * MIB, 3 * MIB)
    assert a.held_bytes == 5 * MIB  # payload + its rows
    with pytest.raises(Overloaded):
        a.admit(2 * MIB, "protobuf", LABELS)  # 5 + 6 > 10: others hold memory, retry later
    first.release()
    assert a.held_bytes == 0 and a.inflight == 0


def test_a_request_that_can_never_fit_is_too_large_not_overloaded() -> None:
    a = Admission(Limits(max_queue_bytes=10 * MIB), Metrics())
    with pytest.raises(TooLarge):
        a.admit(1 * MIB, "json", LABELS)  # x12
    hold = a.admit(1 * MIB, "protobuf", LABELS)
    with pytest.raises(TooLarge):
        hold.part_decoded(1 * MIB, 12 * MIB)
    hold.release()
    assert a.held_bytes == 0


def test_items_bound() -> None:
    a = Admission(Limits(max_queue_items=100), Metrics())
    first = a.admit(10, "protobuf", LABELS)
    first.add_items(80)
    second = a.admit(10, "protobuf", LABELS)
    with pytest.raises(Overloaded):
        second.add_items(30)
    first.add_items(20)
    with pytest.raises(Overloaded, match="items"):
        a.admit(10, "protobuf", LABELS)


def test_refused_by_the_wait_it_would_have() -> None:
    metrics = Metrics()
    a = Admission(Limits(max_wait_s=2.0), metrics)
    a.throughput.rate = 1 * MIB  # bytes a second, as measured
    first = a.admit(1 * MIB, "protobuf", LABELS)
    assert a.expected_wait(0) == pytest.approx(1.0)
    for _ in range(MIN_QUEUE - 2):
        a.admit(32 * 1024, "protobuf", LABELS)  # a few in flight: their own time, no queue
    a.admit(64 * 1024, "protobuf", LABELS)
    with pytest.raises(Overloaded, match="would wait"):
        a.admit(1 * MIB, "protobuf", LABELS)  # 2.5 MiB ahead of it at 1 MiB/s
    assert metrics.value("agentledger_requests_refused_total", reason="wait", **LABELS) == 1
    first.release()
    a.admit(128 * 1024, "protobuf", LABELS)  # the backlog went down


def test_throughput_is_bytes_per_busy_second() -> None:
    t = Throughput()
    t.busy(0.0)
    t.done(1000, 0.5)
    assert t.rate is None  # under a second of work measured
    t.idle(0.5)
    t.busy(10.0)  # idle time in between does not count
    t.done(1000, 10.5)
    assert t.rate == pytest.approx(2000.0)
