"""Self-telemetry: the counters, gauges and histograms of one service, exposed by
`prometheus_client` in the Prometheus text format, with the process's own `process_*` metrics.

Receivers, the pipeline, the store and maintenance record into the one `Metrics` object the
service creates (its own registry: no global state); `GET /metrics` renders it. Labels are fixed
small sets (transport, signal, rule), never key material.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Literal

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LabelKey = tuple[tuple[str, str], ...]
Kind = Literal["counter", "gauge"]
HistogramReading = tuple[dict[float, int], float, int]
"""Cumulative count per upper bound, the sum of observations, their count."""


class Metrics:
    """Counters kept here (`inc`), and values read from their owners at scrape time (`gauge`,
    `counter`, `histogram`, `collector`). Counter names end in `_total`; gauges' never do."""

    def __init__(self, constant_labels: dict[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[LabelKey, float]] = defaultdict(dict)
        self._help: dict[str, str] = {}
        self._read: dict[str, tuple[Kind, str, Callable[[], float]]] = {}
        self._histograms: dict[str, tuple[str, Callable[[], HistogramReading]]] = {}
        self._text: list[Callable[[], list[str]]] = []
        self._constant = dict(constant_labels or {})
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Families(self))
        ProcessCollector(registry=self.registry)

    def describe(self, name: str, kind: str, text: str) -> None:
        """Help text of a counter kept here (`kind` is "counter"; kept for readability)."""
        _check_name(name, "counter" if kind == "counter" else "gauge")
        self._help[name] = text

    def inc(self, name: str, value: float = 1.0, /, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + value

    def value(self, name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))
        with self._lock:
            return self._counters.get(name, {}).get(key, 0.0)

    def gauge(self, name: str, text: str, read: Callable[[], float]) -> None:
        """A value that goes up and down, read from its owner at scrape time."""
        _check_name(name, "gauge")
        self._read[name] = ("gauge", text, read)

    def counter(self, name: str, text: str, read: Callable[[], float]) -> None:
        """A count its owner keeps (only ever growing), read at scrape time."""
        _check_name(name, "counter")
        self._read[name] = ("counter", text, read)

    def histogram(self, name: str, text: str, read: Callable[[], HistogramReading]) -> None:
        self._histograms[name] = (text, read)

    def collector(self, render: Callable[[], list[str]]) -> None:
        """Metrics a component renders itself in the text format (the forward exporters, which
        know nothing of this module); parsed and re-exposed at scrape time."""
        self._text.append(render)

    def render(self) -> str:
        return generate_latest(self.registry).decode("utf-8")

    # -- what the registry collects ---------------------------------------------------------

    def _families(self) -> Iterator[Metric]:
        const = self._constant
        with self._lock:
            counters = {k: dict(v) for k, v in self._counters.items()}
        for name in sorted(counters):
            series = counters[name]
            names = sorted({k for key in series for k, _ in key} | set(const))
            family = CounterMetricFamily(name, self._help.get(name, name), labels=names)
            for key, v in sorted(series.items()):
                labels = {**const, **dict(key)}
                family.add_metric([labels.get(n, "") for n in names], v)
            yield family
        values = [const[n] for n in sorted(const)]
        for name, (kind, text, read_value) in sorted(self._read.items()):
            scalar: CounterMetricFamily | GaugeMetricFamily
            if kind == "counter":
                scalar = CounterMetricFamily(name, text, labels=sorted(const))
            else:
                scalar = GaugeMetricFamily(name, text, labels=sorted(const))
            scalar.add_metric(values, float(read_value()))
            yield scalar
        for name, (text, read_histogram) in sorted(self._histograms.items()):
            buckets, total, count = read_histogram()
            histogram = HistogramMetricFamily(name, text, labels=sorted(const))
            bounds = [(_bound(b), float(n)) for b, n in sorted(buckets.items())]
            histogram.add_metric(values, [*bounds, ("+Inf", float(count))], total)
            yield histogram
        for render in self._text:
            yield from text_string_to_metric_families("\n".join(render()) + "\n")


class _Families(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics._families()


def _check_name(name: str, kind: str) -> None:
    # Prometheus naming: a `_total` suffix says "counter" to every reader of the exposition.
    if (kind == "counter") != name.endswith("_total"):
        raise ValueError(f"{kind} {name}: counters end in _total and nothing else does")


def _bound(b: float) -> str:
    return repr(float(b))
