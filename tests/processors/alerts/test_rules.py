"""Tests for `processors/alerts/rules.py`: a bad rule is refused with a message naming the
field, through the same config parser the YAML file and the API use.
"""

from __future__ import annotations

from typing import Any

import pytest

from collector.configparse import ConfigIssue, parse_dataclass
from processors.alerts.rules import AlertRuleSpec, DeclaredRule, scope_of


def problems(**raw: Any) -> list[str]:
    issues: list[ConfigIssue] = []
    parse_dataclass(AlertRuleSpec, raw, "rule", issues)
    return [str(i) for i in issues]


def test_a_good_rule_has_no_problems() -> None:
    assert problems(name="cost", condition="run_cost", threshold=0.5) == []
    assert (
        problems(
            name="errors",
            condition="workflow_error_rate",
            threshold=0.2,
            window_s=3600,
            min_sample=20,
            workflows=["support"],
            channels=[
                {"type": "slack", "url": "https://hooks.slack.com/services/T/B/x"},
                {"type": "webhook", "url": "https://example.com/h", "secret": "s3cret"},
                {"type": "email", "to": ["oncall@example.com"]},
            ],
        )
        == []
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"condition": "run_cost"}, "rule.name: required"),
        ({"name": "x", "condition": "run_costs"}, "did you mean 'run_cost'?"),
        ({"name": "x", "condition": "workflow_total_cost"}, "window_s: required"),
        ({"name": "x", "condition": "run_cost", "window_s": 60}, "has no window"),
        ({"name": "x", "condition": "run_cost", "threshold": -1}, "threshold: must be"),
        ({"name": "x", "condition": "tool_error_rate", "window_s": 60, "threshold": 1}, "below 1"),
        (
            {"name": "x", "condition": "workflow_run_count_below", "window_s": 60},
            "at least 1",
        ),
        ({"name": "x", "condition": "run_cost", "min_sample": 3}, "min_sample: applies only"),
        (
            {"name": "x", "condition": "org_total_cost", "window_s": 60, "workflows": ["a"]},
            "no workflow scope",
        ),
        ({"name": "x", "condition": "run_cost", "tools": ["a"]}, "tools: only tool"),
        ({"name": "x", "condition": "run_status", "statuses": []}, "statuses: name at least"),
        ({"name": "x", "condition": "run_status", "statuses": ["oops"]}, "statuses[0]"),
        ({"name": "x", "condition": "run_cost", "channels": [{"type": "pager"}]}, "type: must"),
        (
            {"name": "x", "condition": "run_cost", "channels": [{"type": "slack", "url": "x"}]},
            "channels[0].url: must be an http",
        ),
        (
            {"name": "x", "condition": "run_cost", "channels": [{"type": "email", "to": []}]},
            "channels[0].to:",
        ),
        ({"name": "x", "condition": "run_cost", "colour": "red"}, "rule.colour: unknown key"),
        ({"name": "  ", "condition": "run_cost"}, "name: must be 1 to 200"),
    ],
)
def test_a_bad_rule_names_its_problem(raw: dict[str, Any], expected: str) -> None:
    found = problems(**raw)
    assert any(expected in p for p in found), found


def test_declared_rule_carries_its_org() -> None:
    issues: list[ConfigIssue] = []
    rule = parse_dataclass(
        DeclaredRule, {"org": "acme", "name": "c", "condition": "run_cost"}, "r", issues
    )
    assert issues == []
    assert rule.org == "acme"
    assert rule.spec() == AlertRuleSpec(name="c", condition="run_cost")


def test_scope_of() -> None:
    assert scope_of("run_cost") == "run"
    assert scope_of("tool_p95_latency_ms") == "tool"
    with pytest.raises(ValueError, match="unknown condition"):
        scope_of("nope")
