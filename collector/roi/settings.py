"""An org's ROI settings: hourly rate, currency, baselines, FX rates, plan and limits.

Keys of the org's settings document (`collector/auth/settings.py`: the config file's
`auth.orgs[].settings` under what an admin set with `PATCH /v1/settings` or
`/api/org-settings`); `settings_group` hands their schema and their check to that module, and
`parse_settings` reads them for the ROI API and the ROI of traced runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from collector.api import schema as sc
from collector.auth.settings import SettingsGroup
from collector.roi.tasktypes import NAME_RE, Catalogue, valid_minutes

PLANS = ("free", "pro", "enterprise")
# Per-key requests a second (the doc's table) and events a calendar month (UTC) per org.
PLAN_RATE = MappingProxyType({"free": 60, "pro": 200, "enterprise": 1000})
PLAN_MONTHLY_EVENTS: MappingProxyType[str, int | None] = MappingProxyType(
    {"free": 10_000, "pro": None, "enterprise": None}
)
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_LIMIT_KEYS = ("requests_per_second", "monthly_events")
MAX_CUSTOM_TYPES = 1000
MAX_RATE = 1_000_000.0


@dataclass(frozen=True)
class CustomType:
    baseline_minutes: float
    description: str = ""


@dataclass(frozen=True)
class OrgSettings:
    hourly_rate: float = 50.0
    currency: str = "USD"
    fallback_baseline_minutes: float | None = None
    custom_task_types: dict[str, CustomType] = field(default_factory=dict)
    task_type_overrides: dict[str, float] = field(default_factory=dict)
    fx_rates: dict[str, float] = field(default_factory=dict)
    # Self-hosted: an org is unlimited until an admin chooses a plan; "free" and "pro" apply
    # the hosted product's caps (per-key rate, monthly events) for those who resell or meter.
    plan: str = "enterprise"
    requests_per_second: int | None = None
    monthly_events: int | None = None

    @property
    def rate_limit(self) -> int:
        return self.requests_per_second or PLAN_RATE[self.plan]

    @property
    def monthly_cap(self) -> int | None:
        if self.monthly_events is not None:
            return self.monthly_events
        return PLAN_MONTHLY_EVENTS[self.plan]

    def public(self) -> dict[str, Any]:
        return {
            "hourly_rate": _plain(self.hourly_rate),
            "currency": self.currency,
            "fallback_baseline_minutes": self.fallback_baseline_minutes,
            "custom_task_types": {
                k: {"baseline_minutes": v.baseline_minutes, "description": v.description}
                for k, v in sorted(self.custom_task_types.items())
            },
            "task_type_overrides": dict(sorted(self.task_type_overrides.items())),
            "fx_rates": dict(sorted(self.fx_rates.items())),
            "plan": self.plan,
            "limits": {
                "requests_per_second": self.rate_limit,
                "monthly_events": self.monthly_cap,
            },
        }


def _plain(x: float) -> float | int:
    # 45 reads as 45 (as the doc's example shows), not 45.0.
    return int(x) if float(x).is_integer() else x


def parse_settings(raw: Any, catalogue: Catalogue) -> tuple[OrgSettings, list[dict[str, str]]]:
    """Settings from the stored JSON (or a patched copy of it), and every problem found.

    Keys not ours are ignored here: the column is shared with other features."""
    problems: list[dict[str, str]] = []

    def bad(path: str, message: str) -> None:
        problems.append({"field": path, "message": message})

    data = raw if isinstance(raw, dict) else {}
    d = OrgSettings()
    rate = data.get("hourly_rate", d.hourly_rate)
    if not _number(rate) or not 0 <= rate <= MAX_RATE:
        bad("hourly_rate", f"must be a number from 0 to {MAX_RATE:g}")
        rate = d.hourly_rate
    currency = data.get("currency", d.currency)
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        bad("currency", "must be an ISO 4217 code of three capital letters, e.g. EUR")
        currency = d.currency
    fallback = data.get("fallback_baseline_minutes")
    if fallback is not None and not valid_minutes(fallback):
        bad("fallback_baseline_minutes", "must be a number > 0 and at most a year")
        fallback = None
    custom: dict[str, CustomType] = {}
    raw_custom = data.get("custom_task_types", {})
    if not isinstance(raw_custom, dict) or len(raw_custom) > MAX_CUSTOM_TYPES:
        bad("custom_task_types", f"must be an object of at most {MAX_CUSTOM_TYPES} types")
        raw_custom = {}
    for name, entry in raw_custom.items():
        at = f"custom_task_types.{name}"
        if not NAME_RE.fullmatch(name):
            bad(at, "name must be lowercase letters, digits, _ . - (at most 100)")
        elif name in catalogue:
            # Built-ins come first in the stack, so a same-named custom type would never apply.
            bad(at, "is a built-in task type; set task_type_overrides instead")
        elif not isinstance(entry, dict) or not valid_minutes(entry.get("baseline_minutes")):
            bad(f"{at}.baseline_minutes", "must be a number > 0 and at most a year")
        elif not isinstance(entry.get("description", ""), str) or set(entry) - {
            "baseline_minutes",
            "description",
        }:
            bad(at, "may hold only baseline_minutes and a description string")
        else:
            custom[name] = CustomType(
                float(entry["baseline_minutes"]), str(entry.get("description", ""))
            )
    overrides: dict[str, float] = {}
    raw_over = data.get("task_type_overrides", {})
    if not isinstance(raw_over, dict) or len(raw_over) > MAX_CUSTOM_TYPES:
        bad("task_type_overrides", "must be an object of task type → baseline minutes")
        raw_over = {}
    for name, minutes in raw_over.items():
        if not NAME_RE.fullmatch(name) or not valid_minutes(minutes):
            bad(f"task_type_overrides.{name}", "must map a task type to minutes > 0")
        else:
            overrides[name] = float(minutes)
    fx: dict[str, float] = {}
    raw_fx = data.get("fx_rates", {})
    if not isinstance(raw_fx, dict):
        bad("fx_rates", "must be an object of currency → units per USD")
        raw_fx = {}
    for code, value in raw_fx.items():
        if not _CURRENCY.fullmatch(code) or not _number(value) or value <= 0:
            bad(f"fx_rates.{code}", "must map a currency code to a number > 0 (units per USD)")
        else:
            fx[code] = float(value)
    plan = data.get("plan", d.plan)
    if plan not in PLANS:
        bad("plan", f"must be one of {', '.join(PLANS)}")
        plan = d.plan
    limits = data.get("limits", {})
    if not isinstance(limits, dict) or set(limits) - set(_LIMIT_KEYS):
        bad("limits", f"may hold only {', '.join(_LIMIT_KEYS)}")
        limits = {}
    caps: dict[str, int | None] = {}
    for key in _LIMIT_KEYS:
        value = limits.get(key)
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
        if not ok or (value is not None and not 1 <= value <= 10**9):
            bad(f"limits.{key}", "must be a whole number from 1 to 1e9, or null for the plan's")
            value = None
        caps[key] = value
    settings = OrgSettings(
        hourly_rate=float(rate),
        currency=currency,
        fallback_baseline_minutes=None if fallback is None else float(fallback),
        custom_task_types=custom,
        task_type_overrides=overrides,
        fx_rates=fx,
        plan=plan,
        requests_per_second=caps["requests_per_second"],
        monthly_events=caps["monthly_events"],
    )
    return settings, problems


_MINUTES = sc.number(description="minutes > 0, at most a year", exclusiveMinimum=0)
_LIMIT = sc.nullable(sc.integer(1, 10**9, description="null: the plan's"))
PROPERTIES: dict[str, sc.Schema] = {
    "hourly_rate": sc.number(0, MAX_RATE, description="what an hour of the human work costs"),
    "currency": sc.string(3, pattern="^[A-Z]{3}$", description="ISO 4217, e.g. EUR"),
    "fallback_baseline_minutes": sc.nullable(_MINUTES),
    "custom_task_types": sc.obj(
        {},
        extra=sc.obj(
            {"baseline_minutes": _MINUTES, "description": sc.string()},
            ["baseline_minutes"],
            extra=False,
        ),
        maxProperties=MAX_CUSTOM_TYPES,
        description="task type -> its baseline (not a built-in's name)",
    ),
    "task_type_overrides": sc.obj(
        {}, extra=_MINUTES, maxProperties=MAX_CUSTOM_TYPES, description="task type -> minutes"
    ),
    "fx_rates": sc.obj({}, extra=sc.number(), description="currency -> units per USD"),
    "plan": sc.enum(PLANS),
    "limits": sc.obj(
        {"requests_per_second": _LIMIT, "monthly_events": _LIMIT},
        extra=False,
        description="the plan's caps, overridden",
    ),
}
KEYS = tuple(PROPERTIES)


def settings_group(catalogue: Catalogue) -> SettingsGroup:
    """The ROI keys of the per-org settings, checked as `/v1/track` reads them."""

    def resolve(document: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
        settings, problems = parse_settings(document, catalogue)
        return settings.public(), problems

    return SettingsGroup("roi", PROPERTIES, resolve)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
