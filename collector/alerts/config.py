"""The `alerts:` config section: how often window rules are evaluated, the default cool-down,
delivery retries, and the rules declared in the file.

Parsed with the rest of the config (`collector/config.py`); each entry of `rules` is checked
against `processors/alerts/rules.py` (its channels by the registry) and upserted by name at start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.configparse import ConfigIssue, bounds, parse_dataclass
from processors.alerts.rules import DeclaredRule


@dataclass(frozen=True, kw_only=True)
class AlertsConfig:
    """`evaluation_interval_s`: a window rule is evaluated at most this often.
    `cooldown_s`: default least time between two notifications of one rule.
    Failed deliveries are retried `max_attempts` times, `retry_base_s` doubling to `retry_max_s`.
    `rules`: `{org, name, condition, threshold, ...}` entries (see docs/alerts.md)."""

    enabled: bool = True
    evaluation_interval_s: int = field(default=60, metadata=bounds(ge=1, le=86400))
    cooldown_s: int = field(default=300, metadata=bounds(ge=0, le=7 * 86400))
    max_rules_per_tick: int = field(default=50, metadata=bounds(ge=1))
    retry_base_s: float = field(default=10.0, metadata=bounds(ge=0.1, le=3600))
    retry_max_s: float = field(default=900.0, metadata=bounds(ge=1, le=86400))
    max_attempts: int = field(default=8, metadata=bounds(ge=1, le=100))
    rules: list[dict[str, Any]] = field(default_factory=list)


def declared_rules(
    config: AlertsConfig,
    issues: list[ConfigIssue],
    check_channel: Callable[[Mapping[str, Any]], None] | None = None,
) -> list[tuple[str, Any]]:
    """`(org, spec)` of each entry of `alerts.rules`, checked as a `DeclaredRule` and its channels
    with `check_channel`; every problem is added to `issues` with its path."""
    out: list[tuple[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for i, raw in enumerate(config.rules):
        path = f"alerts.rules[{i}]"
        found: list[ConfigIssue] = []
        rule = parse_dataclass(DeclaredRule, raw, path, found)
        if not found and (rule.org, rule.name) in seen:
            message = f"{rule.name!r} is declared twice for org {rule.org!r}"
            found.append(ConfigIssue(f"{path}.name", message))
        if not found and check_channel is not None:
            for j, channel in enumerate(rule.channels):
                try:
                    check_channel(channel)
                except ValueError as e:
                    found.append(ConfigIssue(f"{path}.channels[{j}]", str(e)))
        issues += found
        if not found:
            seen.add((rule.org, rule.name))
            out.append((rule.org, rule.spec()))
    return out
