"""Alert rule evaluation, pure: does a finished run fire a rule, does a window aggregate open,
keep or resolve an event, is a rule in its cool-down, and what the notification says.

Rules (`processors/alerts/rules.py`), runs and aggregates come from `collector/alerts/consumer.py`,
which stores the decisions as alert events and queues the notifications this module words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from processors.alerts.rules import (
    BELOW,
    RUN_COLUMN,
    SAMPLED,
    AlertRuleSpec,
)

Action = Literal["open", "resolve", "clear"]
_NS = 1_000_000_000


@dataclass(frozen=True)
class Aggregate:
    """One subject's value over a rule's window: a workflow's error rate, a tool's p95, the
    org's spend (subject ""). `sample` is how many runs, calls or outputs it is computed from."""

    subject: str
    value: float | None
    sample: int


@dataclass(frozen=True)
class OpenEvent:
    """A window rule's live event for a subject. `acked`: resolved by hand while the condition
    still held, so no new event opens until an evaluation has seen the condition clear."""

    event_id: str
    subject: str
    acked: bool = False


@dataclass(frozen=True)
class Decision:
    """`open` a new event, `resolve` the open one (condition cleared), or `clear` an acked one
    (the condition cleared after a manual resolve: the subject may open again)."""

    action: Action
    subject: str
    value: float | None
    event_id: str | None = None


def run_value(spec: AlertRuleSpec, run: Mapping[str, Any]) -> float | None:
    """The value with which finished `run` fires `spec` (above the threshold; 1.0 for a status
    match), or None when it does not fire."""
    if spec.is_window or not spec.enabled:
        return None
    if spec.workflows and run.get("workflow_name") not in spec.workflows:
        return None
    if spec.condition == "run_status":
        return 1.0 if run.get("status") in spec.statuses else None
    raw = run.get(RUN_COLUMN[spec.condition])
    if raw is None:
        return None
    value = float(raw)
    return value if value > spec.threshold else None


def holds(spec: AlertRuleSpec, agg: Aggregate) -> bool | None:
    """Whether the window condition holds for `agg`; None when there is too little sample to
    judge a rate or percentile (the subject's state is then kept as it is)."""
    if spec.condition in SAMPLED and (
        agg.value is None or agg.sample == 0 or agg.sample < spec.min_sample
    ):
        return None
    value = 0.0 if agg.value is None else agg.value
    if spec.condition in BELOW:
        return value < spec.threshold
    return value > spec.threshold


def decide_window(
    spec: AlertRuleSpec, aggregates: Iterable[Aggregate], live: Iterable[OpenEvent]
) -> list[Decision]:
    """What to do for each subject seen in the window or with a live event. A subject with a
    live event but no aggregate counts as zero (no spend, no runs) or, for rates, as unknown."""
    by_subject = {a.subject: a for a in aggregates}
    events = {e.subject: e for e in live}
    out: list[Decision] = []
    for subject in sorted(set(by_subject) | set(events)):
        agg = by_subject.get(subject, Aggregate(subject, None, 0))
        event = events.get(subject)
        # A subject the rule no longer covers (its scope was narrowed) cannot hold.
        verdict = holds(spec, agg) if in_scope(spec, subject) else False
        if verdict is None:
            continue
        if verdict and event is None:
            out.append(Decision("open", subject, agg.value or 0.0))
        elif not verdict and event is not None:
            action: Action = "clear" if event.acked else "resolve"
            out.append(Decision(action, subject, agg.value, event.event_id))
    return out


def in_scope(spec: AlertRuleSpec, subject: str) -> bool:
    """Whether a window subject (workflow or tool name) is within the rule's scope."""
    if spec.scope == "workflow" and spec.workflows:
        return subject in spec.workflows
    if spec.scope == "tool" and spec.tools:
        return subject in spec.tools
    return True


def in_cooldown(last_notified_ns: int | None, now_ns: int, cooldown_s: int) -> bool:
    """True when the rule notified less than `cooldown_s` ago (no new notification now)."""
    return last_notified_ns is not None and now_ns - last_notified_ns < cooldown_s * _NS


# -- wording ----------------------------------------------------------------------------------

_LABELS: dict[str, tuple[str, str]] = {
    "run_cost": ("Run cost", "usd"),
    "run_duration_ms": ("Run duration", "ms"),
    "run_total_tokens": ("Run tokens", "count"),
    "run_llm_calls": ("LLM calls in a run", "count"),
    "run_tool_calls": ("Tool calls in a run", "count"),
    "run_status": ("Run failed", "status"),
    "workflow_error_rate": ("Error rate", "rate"),
    "workflow_p95_duration_ms": ("p95 run duration", "ms"),
    "workflow_total_cost": ("Workflow spend", "usd"),
    "workflow_run_count_below": ("Runs", "count"),
    "org_total_cost": ("Org spend", "usd"),
    "org_flagged_outputs": ("Flagged outputs", "count"),
    "tool_error_rate": ("Tool error rate", "rate"),
    "tool_p95_latency_ms": ("Tool p95 latency", "ms"),
}


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "usd":
        return f"${value:,.2f}" if value == 0 or abs(value) >= 0.01 else f"${value:.6f}"
    if unit == "rate":
        return f"{value * 100:.1f}%"
    if unit == "ms":
        return f"{value:,.0f} ms"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def notification(
    spec: AlertRuleSpec, event: Mapping[str, Any], kind: str, subject: str
) -> dict[str, Any]:
    """The notification of `event` (an AlertEvent JSON object) firing or resolving: title, a
    readable text, labelled fields and the JSON payload (Notification's fields, as a dict)."""
    label, unit = _LABELS[spec.condition]
    value, threshold = event.get("triggered_value"), event.get("threshold_value")
    where = event.get("workflow_name") or (subject if spec.scope == "tool" else None)
    target = f" — {where}" if where else ""
    if spec.condition == "run_status":
        headline = f"Run ended with status {event.get('status', 'error')}"
        shown_value, shown_threshold = str(event.get("status", "error")), ", ".join(spec.statuses)
    else:
        relation = "below" if spec.condition in BELOW else "above"
        shown_value, shown_threshold = fmt(value, unit), fmt(threshold, unit)
        headline = f"{label} {shown_value} {relation} {shown_threshold}"
    resolved = kind == "alert.resolved"
    title = ("Resolved: " if resolved else "") + f"{headline}{target}"
    window = f" over the last {_duration(spec.window_s)}" if spec.window_s else ""
    text = (
        f"Alert rule “{spec.name}” {'resolved' if resolved else 'fired'}: {headline}{window}"
        + (f" for {where}" if where else "")
        + (f" (run {event['run_id']})" if event.get("run_id") else "")
        + "."
    )
    fields: dict[str, str] = {"Rule": spec.name, "Value": shown_value}
    fields["Threshold"] = shown_threshold
    if event.get("workflow_name"):
        fields["Workflow"] = str(event["workflow_name"])
    if spec.scope == "tool":
        fields["Tool"] = subject
    if event.get("run_id"):
        fields["Run"] = str(event["run_id"])
    payload = {"kind": kind, "rule": {"name": spec.name, "condition": spec.condition}}
    payload["alert_event"] = dict(event)
    return {"kind": kind, "title": title, "text": text, "fields": fields, "payload": payload}


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
