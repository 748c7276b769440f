"""Tests for `collector/telemetry.py`: what `/metrics` exposes, read back with prometheus_client's
own parser — counters kept here and read from owners, gauges, histograms, components' own text,
process metrics, and the naming rule (`_total` for counters only)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.telemetry import Metrics
from tests.promtext import has, metric


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_every_kind_of_metric_is_exposed_with_its_type() -> None:
    m = Metrics()
    m.describe("agentledger_items_received_total", "counter", "items received")
    m.inc("agentledger_items_received_total", 3, transport="http", signal="traces")
    m.inc("agentledger_items_received_total", 2, transport="http", signal="traces")
    m.inc("agentledger_items_received_total", 1, transport="grpc", signal="logs")
    commits = [7.0]
    m.counter("agentledger_store_commits_total", "group commits", lambda: commits[0])
    m.gauge("agentledger_queue_items", "items waiting", lambda: 4)
    m.histogram(
        "agentledger_commit_duration_seconds", "commit time", lambda: ({0.01: 2, 0.1: 5}, 0.3, 6)
    )
    m.collector(lambda: ["# TYPE agentledger_forward_queue_batches gauge",
                         'agentledger_forward_queue_batches{exporter="otlp"} 9'])  # fmt: skip
    text = m.render()
    kinds = families(text)
    assert kinds["agentledger_items_received"] == "counter"
    assert kinds["agentledger_store_commits"] == "counter"
    assert kinds["agentledger_queue_items"] == "gauge"
    assert kinds["agentledger_commit_duration_seconds"] == "histogram"
    assert kinds["agentledger_forward_queue_batches"] == "gauge"
    assert metric(text, "agentledger_items_received_total", transport="http") == 5
    assert metric(text, "agentledger_items_received_total", signal="logs") == 1
    assert metric(text, "agentledger_store_commits_total") == 7
    commits[0] = 8.0  # read at every scrape
    assert metric(m.render(), "agentledger_store_commits_total") == 8
    assert metric(text, "agentledger_commit_duration_seconds_bucket", le="0.1") == 5
    assert metric(text, "agentledger_commit_duration_seconds_bucket", le="+Inf") == 6
    assert metric(text, "agentledger_commit_duration_seconds_count") == 6
    assert metric(text, "agentledger_forward_queue_batches", exporter="otlp") == 9
    assert has(text, "process_resident_memory_bytes")
    assert has(text, "process_cpu_seconds_total")


def test_only_counters_are_named_total() -> None:
    m = Metrics()
    with pytest.raises(ValueError, match="counters end in _total"):
        m.gauge("agentledger_store_commits_total", "x", lambda: 1)
    with pytest.raises(ValueError, match="counters end in _total"):
        m.counter("agentledger_store_commits", "x", lambda: 1)


def test_constant_labels_mark_every_series() -> None:
    m = Metrics({"node": "host-1"})
    m.inc("agentledger_redactions_total", rule="email")
    m.gauge("agentledger_queue_bytes", "bytes waiting", lambda: 10)
    text = m.render()
    assert metric(text, "agentledger_redactions_total", node="host-1", rule="email") == 1
    assert metric(text, "agentledger_queue_bytes", node="host-1") == 10
