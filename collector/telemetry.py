"""Self-telemetry: counters, gauges and histograms rendered in Prometheus text format.

Receivers, the pipeline and the store record into one `Metrics` object the service creates;
`GET /metrics` renders it. Labels are fixed small sets (transport, signal), never key material.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

LabelKey = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[LabelKey, float]] = defaultdict(dict)
        self._help: dict[str, tuple[str, str]] = {}
        self._gauges: dict[str, Callable[[], float]] = {}
        self._collectors: list[Callable[[], list[str]]] = []

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, value: float = 1.0, /, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + value

    def gauge(self, name: str, text: str, read: Callable[[], float]) -> None:
        self._help[name] = ("gauge", text)
        self._gauges[name] = read

    def collector(self, render: Callable[[], list[str]]) -> None:
        """Add lines rendered at scrape time (e.g. a histogram kept elsewhere)."""
        self._collectors.append(render)

    def value(self, name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))
        with self._lock:
            return self._counters.get(name, {}).get(key, 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            counters = {k: dict(v) for k, v in self._counters.items()}
        for name in sorted(set(counters) | set(self._gauges)):
            kind, text = self._help.get(name, ("counter", name))
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            if name in self._gauges:
                lines.append(f"{name} {_num(self._gauges[name]())}")
                continue
            for key, v in sorted(counters[name].items()):
                lines.append(f"{name}{_labels(key)} {_num(v)}")
        for render in self._collectors:
            lines.extend(render())
        return "\n".join(lines) + "\n"


def _labels(key: LabelKey) -> str:
    if not key:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
    return "{" + inner + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def histogram_lines(
    name: str, text: str, buckets: dict[float, int], total: float, count: int
) -> list[str]:
    """Prometheus histogram lines from cumulative bucket counts."""
    lines = [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
    for bound, n in sorted(buckets.items()):
        lines.append(f'{name}_bucket{{le="{bound}"}} {n}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {count}')
    lines.append(f"{name}_sum {total!r}")
    lines.append(f"{name}_count {count}")
    return lines
