"""The `POST /v1/track` body and headers, validated field by field (the Triad track API doc).

`parse_track` turns the JSON object into a frozen `TrackRequest` or raises one 422
`validation_error` listing every failing field; `roi_math` then prices the request.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.api import schema as sc
from collector.api.params import parse_time
from collector.errors import ApiError
from collector.roi.tasktypes import MAX_BASELINE_MINUTES

OUTCOMES = ("success", "failure", "needs_review")
MAX_EXCERPT = 2000
MAX_ID = 255
MAX_METADATA_BYTES = 16 * 1024
MAX_DURATION_S = 7 * 86400.0
MAX_TOKENS = 10**12
MAX_COST = 1e9
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_AUDIT_KEYS = frozenset({"input_excerpt", "output_excerpt", "model", "tokens_in", "tokens_out"})


_TOKENS = sc.integer(0, MAX_TOKENS)
TRACK_BODY = sc.obj(
    {
        "agent_id": sc.string(MAX_ID, min_length=1, blank=False, description="your stable id"),
        "task_type": sc.string(100, min_length=1, blank=False),
        "outcome": sc.enum(OUTCOMES),
        "agent_duration_seconds": sc.number(0, MAX_DURATION_S),
        "agent_cost": sc.number(0, MAX_COST, description="in the org's currency"),
        "model": sc.string(200, min_length=1, blank=False),
        "tokens_in": _TOKENS,
        "tokens_out": _TOKENS,
        "human_baseline_minutes": sc.number(
            0, MAX_BASELINE_MINUTES, exclusiveMinimum=0, description="overrides the task type's"
        ),
        "metadata": sc.obj({}, description=f"free-form, at most {MAX_METADATA_BYTES} bytes"),
        "audit_sample": sc.obj(
            {
                "input_excerpt": sc.string(MAX_EXCERPT),
                "output_excerpt": sc.string(MAX_EXCERPT),
                "model": sc.string(200, min_length=1),
                "tokens_in": _TOKENS,
                "tokens_out": _TOKENS,
            },
            extra=False,
        ),
        "occurred_at": sc.string(64, description="ISO 8601; default: the time of receipt"),
        "trace_id": sc.string(32, pattern="^[0-9a-f]{32}$", description="W3C trace id"),
        "run_id": sc.string(MAX_ID, min_length=1, blank=False),
    },
    ["agent_id", "task_type", "outcome"],
    description="Unknown top-level fields are accepted and ignored (an SDK may add some).",
)


@dataclass(frozen=True)
class TrackRequest:
    agent_id: str
    task_type: str
    outcome: str
    agent_duration_seconds: float | int | None = None
    agent_cost: float | None = None
    model: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    human_baseline_minutes: float | None = None
    metadata: dict[str, Any] | None = None
    audit_sample: dict[str, Any] | None = None
    occurred_at: datetime | None = None
    trace_id: str | None = None
    span_id: str | None = None
    run_id: str | None = None


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.items.append({"field": field, "message": message})


def parse_track(body: dict[str, Any], traceparent: str | None = None) -> TrackRequest:
    # Unknown top-level fields are ignored: an SDK that adds one must not break every call.
    p = _Problems()
    agent_id = _string(p, body, "agent_id", MAX_ID, required=True)
    task_type = _string(p, body, "task_type", 100, required=True)
    outcome = body.get("outcome")
    if outcome not in OUTCOMES:
        p.add("outcome", f"is required and must be one of {', '.join(OUTCOMES)}")
    duration = _number(p, body, "agent_duration_seconds", 0, MAX_DURATION_S)
    cost = _number(p, body, "agent_cost", 0, MAX_COST)
    baseline = _number(p, body, "human_baseline_minutes", 0, MAX_BASELINE_MINUTES)
    if baseline == 0:
        p.add("human_baseline_minutes", "must be greater than 0")
    model = _string(p, body, "model", 200)
    tokens_in = _tokens(p, body, "tokens_in")
    tokens_out = _tokens(p, body, "tokens_out")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            p.add("metadata", "must be an object")
            metadata = None
        elif len(json.dumps(metadata, separators=(",", ":"))) > MAX_METADATA_BYTES:
            p.add("metadata", f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    audit = _audit(p, body.get("audit_sample"))
    occurred = None
    raw_time = body.get("occurred_at")
    if raw_time is not None:
        # An ISO 8601 string only: the epoch-millisecond form parse_time also reads is not one.
        if not isinstance(raw_time, str) or raw_time.strip().lstrip("-").isdigit():
            p.add("occurred_at", "must be an ISO 8601 date-time string")
        else:
            occurred = parse_time(raw_time)
            if occurred is None:
                p.add("occurred_at", "must be an ISO 8601 date-time string")
    trace_id = _string(p, body, "trace_id", 32)
    if trace_id is not None and not _HEX32.fullmatch(trace_id):
        p.add("trace_id", "must be 32 lowercase hex digits (a W3C trace id)")
    span_id = None
    if traceparent:
        m = _TRACEPARENT.fullmatch(traceparent.strip())
        if m is None or m.group(1) == "ff" or set(m.group(2)) == {"0"}:
            p.add(
                "traceparent", "header must be a W3C traceparent (00-<trace id>-<span id>-<flags>)"
            )
        elif trace_id is None:
            trace_id, span_id = m.group(2), m.group(3)
    run_id = _string(p, body, "run_id", MAX_ID)
    if p.items:
        raise ApiError(422, "validation_error", "Body fails schema validation", p.items)
    assert agent_id is not None and task_type is not None
    return TrackRequest(
        agent_id=agent_id,
        task_type=task_type,
        outcome=str(outcome),
        agent_duration_seconds=duration,
        agent_cost=cost,
        model=model,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        human_baseline_minutes=baseline,
        metadata=metadata,
        audit_sample=audit,
        occurred_at=occurred,
        trace_id=trace_id,
        span_id=span_id,
        run_id=run_id,
    )


def _string(
    p: _Problems, body: dict[str, Any], name: str, maximum: int, required: bool = False
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            p.add(name, "is required")
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > maximum:
        p.add(name, f"must be a non-empty string of at most {maximum} characters")
        return None
    return value


def _number(
    p: _Problems, body: dict[str, Any], name: str, low: float, high: float
) -> float | int | None:
    value = body.get(name)
    if value is None:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        p.add(name, f"must be a number from {low:g} to {high:g}")
        return None
    return value


def _tokens(p: _Problems, body: dict[str, Any], name: str, where: str = "") -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TOKENS:
        p.add(where + name, f"must be a whole number from 0 to {MAX_TOKENS:.0e}")
        return None
    return value


def _audit(p: _Problems, raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        p.add("audit_sample", "must be an object")
        return None
    for name in sorted(set(raw) - _AUDIT_KEYS):
        p.add(f"audit_sample.{name}", "is not a field of audit_sample")
    out: dict[str, Any] = {}
    for name, maximum in (("input_excerpt", MAX_EXCERPT), ("output_excerpt", MAX_EXCERPT)):
        value = raw.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > maximum):
            p.add(f"audit_sample.{name}", f"must be a string of at most {maximum} characters")
        elif value is not None:
            out[name] = value
    model = raw.get("model")
    if model is not None and (not isinstance(model, str) or not model or len(model) > 200):
        p.add("audit_sample.model", "must be a non-empty string of at most 200 characters")
    elif model is not None:
        out["model"] = model
    for name in ("tokens_in", "tokens_out"):
        value = _tokens(p, raw, name, "audit_sample.")
        if value is not None:
            out[name] = value
    return out
