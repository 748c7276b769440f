"""Reading the Prometheus text that `/metrics` serves, with prometheus_client's own parser: a test
that reads a metric also proves the page is valid exposition."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`; 0 if there are none.
    A counter is named with its `_total`, as it is exposed."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def has(text: str, name: str, **labels: str) -> bool:
    """Whether any sample named `name` with `labels` is on the page (even at 0)."""
    return any(
        sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )
