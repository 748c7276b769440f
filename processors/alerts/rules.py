"""Alert rule definitions: the conditions catalogue and the rule dataclass with its checks.

Rules come from the `alerts.rules` section of the config and from `/api/alert-rules` bodies
(both parsed by the collector's config parser into `AlertRuleSpec`); `processors/alerts/engine.py`
evaluates them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Scope = Literal["run", "workflow", "org", "tool"]
Condition = Literal[
    "run_cost",
    "run_duration_ms",
    "run_total_tokens",
    "run_llm_calls",
    "run_tool_calls",
    "run_status",
    "workflow_error_rate",
    "workflow_p95_duration_ms",
    "workflow_total_cost",
    "workflow_run_count_below",
    "org_total_cost",
    "org_flagged_outputs",
    "tool_error_rate",
    "tool_p95_latency_ms",
]
RunStatus = Literal["error", "timeout", "loop_detected"]
FAILED_STATUSES: tuple[RunStatus, ...] = ("error", "timeout", "loop_detected")

# The column of `runs` each per-run threshold condition compares.
RUN_COLUMN: dict[str, str] = {
    "run_cost": "cost_usd",
    "run_duration_ms": "duration_ms",
    "run_total_tokens": "total_tokens",
    "run_llm_calls": "llm_call_count",
    "run_tool_calls": "tool_use_count",
}
# Conditions over a sample (a rate or a percentile): the ones `min_sample` applies to.
SAMPLED = frozenset(
    {"workflow_error_rate", "workflow_p95_duration_ms", "tool_error_rate", "tool_p95_latency_ms"}
)
RATES = frozenset({"workflow_error_rate", "tool_error_rate"})
BELOW = frozenset({"workflow_run_count_below"})  # fires when the value is under the threshold
MAX_WINDOW_S = 90 * 86400
MAX_CHANNELS = 10
CHANNEL_TYPES = ("slack", "webhook", "email")
_CHANNEL_KEYS = {
    "slack": {"url", "name"},
    "webhook": {"url", "secret", "name"},
    "email": {"to", "name"},
}


def scope_of(condition: str) -> Scope:
    """`workflow_error_rate` → "workflow": what one evaluation of the condition is about."""
    head = condition.split("_", 1)[0]
    if head not in ("run", "workflow", "org", "tool"):
        raise ValueError(f"unknown condition {condition!r}")
    return head  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class AlertRuleSpec:
    """One alert rule as a user writes it (YAML or JSON).

    Per-run conditions fire once for a finished run whose value is above `threshold`
    (`run_status`: whose status is one of `statuses`). Window conditions aggregate the last
    `window_s` seconds per workflow, tool or org and open one event while the value is above
    `threshold` (below, for `workflow_run_count_below`), resolving it when that clears; rates and
    percentiles are judged only on at least `min_sample` runs or calls. `workflows` / `tools`
    narrow the scope (empty: all). `cooldown_s` (None: the `alerts:` default) is the least time
    between two notifications of the rule.
    """

    name: str
    condition: Condition
    threshold: float = 0.0
    workflows: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    statuses: list[RunStatus] = field(default_factory=lambda: list(FAILED_STATUSES))
    window_s: int | None = None
    min_sample: int = 0
    cooldown_s: int | None = None
    channels: list[dict[str, Any]] = field(default_factory=list)
    enabled: bool = True

    @property
    def scope(self) -> Scope:
        return scope_of(self.condition)

    @property
    def is_window(self) -> bool:
        return self.scope != "run"

    def validate(self) -> list[str]:
        return rule_problems(self)


@dataclass(frozen=True, kw_only=True)
class DeclaredRule(AlertRuleSpec):
    """A rule of the config file's `alerts.rules`: a spec and the org it belongs to."""

    org: str = "default"

    def spec(self) -> AlertRuleSpec:
        fields = {k: v for k, v in self.__dict__.items() if k != "org"}
        return AlertRuleSpec(**fields)


def rule_problems(r: AlertRuleSpec) -> list[str]:
    """Every problem of `r`, each naming its field; [] when the rule is usable."""
    out: list[str] = []
    if not r.name.strip() or len(r.name) > 200:
        out.append("name: must be 1 to 200 characters, not blank")
    scope = r.scope
    out += _threshold_problems(r)
    if r.is_window:
        if r.window_s is None:
            out.append(f"window_s: required for the window condition {r.condition}")
        elif not 60 <= r.window_s <= MAX_WINDOW_S:
            out.append(f"window_s: must be from 60 to {MAX_WINDOW_S} seconds")
    elif r.window_s is not None:
        out.append(f"window_s: a per-run condition ({r.condition}) has no window")
    if r.min_sample < 0:
        out.append("min_sample: must be >= 0")
    elif r.min_sample and r.condition not in SAMPLED:
        out.append(f"min_sample: applies only to rates and percentiles, not {r.condition}")
    if scope == "org" and r.workflows:
        out.append(f"workflows: an org-wide condition ({r.condition}) has no workflow scope")
    if scope != "tool" and r.tools:
        out.append(f"tools: only tool conditions take a tool scope, not {r.condition}")
    if r.condition != "run_status" and r.statuses != list(FAILED_STATUSES):
        out.append("statuses: only the run_status condition takes statuses")
    if r.condition == "run_status" and not r.statuses:
        out.append("statuses: name at least one of " + ", ".join(FAILED_STATUSES))
    for key, names in (("workflows", r.workflows), ("tools", r.tools)):
        if any(not n or len(n) > 500 for n in names) or len(names) > 100:
            out.append(f"{key}: at most 100 names of 1 to 500 characters")
    if r.cooldown_s is not None and not 0 <= r.cooldown_s <= 7 * 86400:
        out.append("cooldown_s: must be from 0 to 604800 seconds")
    if len(r.channels) > MAX_CHANNELS:
        out.append(f"channels: at most {MAX_CHANNELS}")
    for i, channel in enumerate(r.channels):
        out += [f"channels[{i}].{p}" for p in channel_problems(channel)]
    return out


def _threshold_problems(r: AlertRuleSpec) -> list[str]:
    t = r.threshold
    if not math.isfinite(t) or t < 0:
        return ["threshold: must be a finite number >= 0"]
    if r.condition in RATES and t >= 1:
        return ["threshold: a rate is from 0 to 1 and must be below 1 to ever be exceeded"]
    if r.condition in BELOW and t < 1:
        return ["threshold: a floor of runs must be at least 1"]
    if r.condition == "run_status" and t != 0:
        return ["threshold: run_status takes no threshold (leave it 0)"]
    return []


def channel_problems(channel: dict[str, Any]) -> list[str]:
    """Shape checks of a channel spec; `registry.build_channel` checks the URL policy too."""
    kind = channel.get("type")
    if kind not in CHANNEL_TYPES:
        return [f"type: must be one of {', '.join(CHANNEL_TYPES)}"]
    out = [
        f"{key}: unknown key for a {kind} channel"
        for key in channel
        if key != "type" and key not in _CHANNEL_KEYS[kind]
    ]
    if kind in ("slack", "webhook"):
        url = channel.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            out.append("url: must be an http:// or https:// URL")
        secret = channel.get("secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            out.append("secret: must be a non-empty string")
    else:
        to = channel.get("to")
        if (
            not isinstance(to, list)
            or not to
            or len(to) > 50
            or not all(isinstance(a, str) and "@" in a for a in to)
        ):
            out.append("to: must be a list of 1 to 50 email addresses")
    return out
