"""Shared helpers of the normalisation tests: build spans and a `Batch`, run the processor.

Used by test_normalise.py and test_normalise_frameworks.py.
"""

from __future__ import annotations

from typing import Any

from collector.model import Batch, Signal
from collector.store.schema import SPAN_NORMALISED
from processors.normalise.span import NormaliseConfig, NormaliseProcessor


def span(
    attrs: dict[str, Any],
    name: str = "span",
    *,
    parent: str | None = "p" * 16,
    status: int = 0,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {"attrs": attrs, "name": name, "parent": parent, "status": status, "events": events}


def run(*spans: dict[str, Any], excerpt_chars: int = 2000) -> list[dict[str, Any]]:
    batch = Batch(
        signal=Signal.TRACES,
        org="o",
        columns={
            "name": [s["name"] for s in spans],
            "kind": [1 for _ in spans],
            "status_code": [s["status"] for s in spans],
            "status_message": [None for _ in spans],
            "parent_span_id": [s["parent"] for s in spans],
            "service_name": ["svc" for _ in spans],
        },
        attributes=[s["attrs"] for s in spans],
        resources=[{"service.name": "svc"} for _ in spans],
        events=[s["events"] or [] for s in spans],
    )
    out = NormaliseProcessor(NormaliseConfig(excerpt_chars=excerpt_chars)).process(batch)
    return [{c.name: out.columns[c.name][i] for c in SPAN_NORMALISED} for i in range(len(out))]


def one(attrs: dict[str, Any], name: str = "span", **kw: Any) -> dict[str, Any]:
    return run(span(attrs, name, **kw))[0]
