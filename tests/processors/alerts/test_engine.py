"""Tests for `processors/alerts/engine.py`: every condition firing just above its threshold and not
firing at it, window decisions (open / keep / resolve / clear), cool-down and the wording.
"""

from __future__ import annotations

from typing import Any

import pytest

from processors.alerts.engine import (
    Aggregate,
    Decision,
    OpenEvent,
    decide_window,
    holds,
    in_cooldown,
    notification,
    run_value,
)
from processors.alerts.rules import AlertRuleSpec

S = 1_000_000_000


def spec(condition: str, threshold: float = 0.0, **kw: Any) -> AlertRuleSpec:
    if condition.split("_", maxsplit=1)[0] != "run":
        kw.setdefault("window_s", 3600)
    rule = AlertRuleSpec(name="r", condition=condition, threshold=threshold, **kw)  # type: ignore[arg-type]
    assert rule.validate() == []
    return rule


def run(**kw: Any) -> dict[str, Any]:
    base = {
        "org": "acme",
        "run_id": "r1",
        "workflow_name": "support",
        "status": "success",
        "cost_usd": 0.0,
        "duration_ms": 0,
        "total_tokens": 0,
        "llm_call_count": 0,
        "tool_use_count": 0,
    }
    return {**base, **kw}


@pytest.mark.parametrize(
    ("condition", "column", "threshold", "above"),
    [
        ("run_cost", "cost_usd", 0.5, 0.500001),
        ("run_duration_ms", "duration_ms", 30_000, 30_001),
        ("run_total_tokens", "total_tokens", 10_000, 10_001),
        ("run_llm_calls", "llm_call_count", 20, 21),
        ("run_tool_calls", "tool_use_count", 50, 51),
    ],
)
def test_run_thresholds_fire_above_and_not_at(
    condition: str, column: str, threshold: float, above: float
) -> None:
    rule = spec(condition, threshold)
    assert run_value(rule, run(**{column: threshold})) is None
    assert run_value(rule, run(**{column: above})) == pytest.approx(above)
    assert run_value(rule, run(**{column: None})) is None


@pytest.mark.parametrize("status", ["error", "timeout", "loop_detected"])
def test_run_status_fires_for_each_failed_status(status: str) -> None:
    assert run_value(spec("run_status"), run(status=status)) == 1.0
    assert run_value(spec("run_status"), run(status="success")) is None
    only_errors = spec("run_status", statuses=["error"])
    assert (run_value(only_errors, run(status=status)) == 1.0) is (status == "error")


def test_run_rules_honour_workflow_scope_and_enabled() -> None:
    rule = spec("run_cost", 1.0, workflows=["billing"])
    assert run_value(rule, run(cost_usd=5.0)) is None
    assert run_value(rule, run(cost_usd=5.0, workflow_name="billing")) == 5.0
    off = spec("run_cost", 1.0, enabled=False)
    assert run_value(off, run(cost_usd=5.0)) is None


@pytest.mark.parametrize(
    ("condition", "threshold", "at", "beyond"),
    [
        ("workflow_error_rate", 0.2, 0.2, 0.21),
        ("workflow_p95_duration_ms", 5000, 5000, 5001),
        ("workflow_total_cost", 10.0, 10.0, 10.01),
        ("workflow_run_count_below", 3, 3, 2),
        ("org_total_cost", 100.0, 100.0, 100.5),
        ("org_flagged_outputs", 5, 5, 6),
        ("tool_error_rate", 0.1, 0.1, 0.11),
        ("tool_p95_latency_ms", 800, 800, 801),
    ],
)
def test_window_conditions_hold_beyond_and_not_at(
    condition: str, threshold: float, at: float, beyond: float
) -> None:
    rule = spec(condition, threshold)
    assert holds(rule, Aggregate("s", at, 10)) is False
    assert holds(rule, Aggregate("s", beyond, 10)) is True


def test_min_sample_keeps_rates_undecided_below_it() -> None:
    rule = spec("workflow_error_rate", 0.2, min_sample=5)
    assert holds(rule, Aggregate("s", 1.0, 4)) is None
    assert holds(rule, Aggregate("s", 1.0, 5)) is True
    assert holds(rule, Aggregate("s", None, 0)) is None
    # Sums and counts need no sample: no runs is a spend of zero, and zero runs is a floor hit.
    assert holds(spec("workflow_total_cost", 1.0), Aggregate("s", None, 0)) is False
    assert holds(spec("workflow_run_count_below", 1), Aggregate("s", 0, 0)) is True


def test_decide_window_opens_keeps_resolves_and_clears() -> None:
    rule = spec("workflow_total_cost", 10.0)
    aggs = [Aggregate("a", 12.0, 3), Aggregate("b", 11.0, 2), Aggregate("c", 1.0, 1)]
    live = [OpenEvent("e-b", "b"), OpenEvent("e-c", "c"), OpenEvent("e-d", "d", acked=True)]
    assert decide_window(rule, aggs, live) == [
        Decision("open", "a", 12.0),  # holds, nothing open: open
        # b holds and is open: kept (no decision)
        Decision("resolve", "c", 1.0, "e-c"),  # cleared: resolve
        Decision("clear", "d", None, "e-d"),  # acked by hand and now clear: may open again
    ]
    acked_still_high = [OpenEvent("e-a", "a", acked=True)]
    assert decide_window(rule, [Aggregate("a", 12.0, 3)], acked_still_high) == []


def test_decide_window_keeps_an_event_when_the_sample_is_too_small() -> None:
    rule = spec("tool_error_rate", 0.1, min_sample=10)
    assert decide_window(rule, [Aggregate("search", 0.0, 3)], [OpenEvent("e", "search")]) == []
    assert decide_window(rule, [], [OpenEvent("e", "search")]) == []


def test_cooldown_boundary() -> None:
    now = 1000 * S
    assert not in_cooldown(None, now, 300)
    assert in_cooldown(now - 299 * S, now, 300)
    assert not in_cooldown(now - 300 * S, now, 300)
    assert not in_cooldown(now, now, 0)


def test_notification_names_rule_workflow_value_threshold_and_run() -> None:
    rule = spec("run_cost", 0.5, channels=[{"type": "slack", "url": "https://h.example/x"}])
    event = {
        "id": "ae_1",
        "run_id": "run-42",
        "workflow_name": "support-bot",
        "triggered_value": 0.75,
        "threshold_value": 0.5,
    }
    note = notification(rule, event, "alert.triggered", "run-42")
    assert note["title"] == "Run cost $0.75 above $0.50 — support-bot"
    for part in ("“r”", "$0.75", "$0.50", "support-bot", "run-42"):
        assert part in note["text"]
    assert note["fields"] == {
        "Rule": "r",
        "Value": "$0.75",
        "Threshold": "$0.50",
        "Workflow": "support-bot",
        "Run": "run-42",
    }
    assert note["payload"]["alert_event"] == event
    resolved = notification(spec("workflow_error_rate", 0.2), event, "alert.resolved", "x")
    assert resolved["title"] == "Resolved: Error rate 75.0% above 50.0% — support-bot"


def test_a_subject_outside_a_narrowed_scope_resolves() -> None:
    rule = spec("workflow_error_rate", 0.1, min_sample=10, workflows=["billing"])
    live = [OpenEvent("e", "support")]
    assert decide_window(rule, [Aggregate("support", 0.9, 50)], live) == [
        Decision("resolve", "support", 0.9, "e")
    ]
    assert decide_window(rule, [Aggregate("support", 0.9, 50)], []) == []
