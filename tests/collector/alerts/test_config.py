"""Tests for the `alerts:` config section: declared rules are checked at load with the YAML path
of every problem (what `agentledger validate` prints), channels included.
"""

from __future__ import annotations

from typing import Any

import pytest

from collector import registry
from collector.alerts.config import AlertsConfig
from collector.config import parse_config
from collector.configparse import ConfigError


def issues(alerts: dict[str, Any], **sections: Any) -> list[str]:
    config = parse_config({"alerts": alerts, **sections}, {})
    return [str(i) for i in registry.validate(config)]


def test_defaults_and_a_good_declared_rule() -> None:
    assert parse_config({}, {}).alerts == AlertsConfig()
    good = {"rules": [{"org": "acme", "name": "c", "condition": "run_cost", "threshold": 1}]}
    assert issues(good) == []


def test_bad_rules_are_reported_with_their_paths() -> None:
    found = issues(
        {
            "rules": [
                {"org": "acme", "name": "a", "condition": "run_cots"},
                {"org": "acme", "name": "b", "condition": "workflow_error_rate", "threshold": 2},
                {"org": "acme", "name": "c", "condition": "run_cost"},
                {"org": "acme", "name": "c", "condition": "run_cost"},
                {
                    "org": "acme",
                    "name": "d",
                    "condition": "run_cost",
                    "channels": [{"type": "webhook", "url": "http://127.0.0.1:9/x"}],
                },
                {
                    "org": "acme",
                    "name": "e",
                    "condition": "run_cost",
                    "channels": [{"type": "email", "to": ["a@example.com"]}],
                },
            ]
        }
    )
    text = "\n".join(found)
    assert "alerts.rules[0].condition: expected one of:" in text and "'run_cost'?" in text
    assert "alerts.rules[1]: window_s: required" in text
    assert "alerts.rules[1]: threshold: a rate is from 0 to 1" in text
    assert "alerts.rules[3].name: 'c' is declared twice for org 'acme'" in text
    assert "alerts.rules[4].channels[0]:" in text  # a private address, refused by default
    assert "alerts.rules[5].channels[0]: email channels need an SMTP server" in text
    assert not any(i.startswith("alerts.rules[2]") for i in found)


def test_private_webhooks_pass_when_allowed() -> None:
    rule = {
        "org": "acme",
        "name": "d",
        "condition": "run_cost",
        "channels": [{"type": "webhook", "url": "http://127.0.0.1:9/x", "secret": "s"}],
    }
    assert issues({"rules": [rule]}, outbound={"allow_private": True}) == []


def test_section_bounds() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"alerts": {"evaluation_interval_s": 0, "cooldown_s": -1, "colour": 1}}, {})
    found = [str(i) for i in e.value.issues]
    assert any(i.startswith("alerts.evaluation_interval_s: must be between 1") for i in found)
    assert any(i.startswith("alerts.cooldown_s: must be between 0") for i in found)
    assert any(i.startswith("alerts.colour: unknown key") for i in found)
