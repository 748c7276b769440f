"""ROI arithmetic of one tracked task: which baseline applies, what the run cost, what it saved.

Pure functions over a validated `TrackRequest`, the org's settings, the task-type catalogue, the
prices (a `Pricer`) and the reference FX table; `docs/roi.md` states the formulas and roundings
implemented here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from collector.model import Batch, Processor, Signal
from collector.prices.fx import Fx, FxTable, usd_to
from collector.roi.request import TrackRequest
from collector.roi.settings import OrgSettings
from collector.roi.tasktypes import Catalogue

HOURS = Decimal("0.001")
MONEY = Decimal("0.01")
MICRO = Decimal("0.000001")


Pricer = Callable[[str, str, int | None, int | None, datetime], tuple[float | None, str | None]]
"""(org, model, tokens in, tokens out, when) → (USD or None when unknown, price version)."""


def processor_pricer(cost: Processor) -> Pricer:
    """Prices a run with the configured cost processor (the same prices, with the same per-org
    overrides, as LLM spans get), by handing it the run as one LLM span that started at `at`,
    so it gets the price in force then."""

    def price(
        org: str, model: str, tin: int | None, tout: int | None, at: datetime
    ) -> tuple[float | None, str | None]:
        nones: list[Any] = [None]
        start_ns = int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000
        columns: dict[str, list[Any]] = {
            "span_type": ["llm"], "model": [model], "request_model": [model],
            "provider": nones, "usage_is_aggregate": [False], "input_tokens": [tin],
            "output_tokens": [tout], "cache_read_tokens": nones, "cache_write_tokens": nones,
            "reasoning_tokens": nones, "cost_usd": nones, "cost_source": nones,
            "price_book_version": nones, "start_time_unix_nano": [start_ns],
        }  # fmt: skip
        out = cost.process(Batch(Signal.TRACES, org, columns, [{}], [{}], [[]]))
        usd = out.columns["cost_usd"][0]
        return (None if usd is None else float(usd)), out.columns["price_book_version"][0]

    return price


class UnknownTaskType(Exception):
    """No layer of the stack knows the task type and the request gave no baseline."""


@dataclass(frozen=True)
class Baseline:
    minutes: float
    source: str  # request | override | builtin | custom | fallback


@dataclass(frozen=True)
class RunCost:
    amount: Decimal | None  # in the org's currency, 6 places
    source: str  # provided | computed | none
    usd: float | None = None  # what the price book said, before conversion
    price_book_version: str | None = None
    fx: Fx | None = None  # the rate applied (and its date), for a currency other than USD


@dataclass(frozen=True)
class Savings:
    baseline: Baseline
    hourly_rate: float
    currency: str
    hours_saved: Decimal
    cost_saved: Decimal
    cost: RunCost
    net_saved: Decimal


def resolve_baseline(req: TrackRequest, settings: OrgSettings, catalogue: Catalogue) -> Baseline:
    """The first layer that knows the task: request → override → builtin → custom → fallback."""
    if req.human_baseline_minutes is not None:
        return Baseline(float(req.human_baseline_minutes), "request")
    override = settings.task_type_overrides.get(req.task_type)
    if override is not None:
        return Baseline(override, "override")
    builtin = catalogue.get(req.task_type)
    if builtin is not None:
        return Baseline(builtin.baseline_minutes, "builtin")
    custom = settings.custom_task_types.get(req.task_type)
    if custom is not None:
        return Baseline(custom.baseline_minutes, "custom")
    if settings.fallback_baseline_minutes is not None:
        return Baseline(settings.fallback_baseline_minutes, "fallback")
    raise UnknownTaskType(req.task_type)


def resolve_cost(
    req: TrackRequest, settings: OrgSettings, org: str, price: Pricer, *, at: datetime, fx: FxTable
) -> RunCost:
    """`agent_cost` as given; else priced from model and tokens (top level, else the audit
    sample's, which the older doc used) at the prices in force `at` (when the task occurred)
    and converted to the org's currency; else none."""
    if req.agent_cost is not None:
        return RunCost(_dec(req.agent_cost).quantize(MICRO, ROUND_HALF_UP), "provided")
    audit = req.audit_sample or {}
    model: str | None = req.model
    tin, tout = req.tokens_in, req.tokens_out
    if model is None:
        model, tin, tout = audit.get("model"), audit.get("tokens_in"), audit.get("tokens_out")
    if not model or (tin is None and tout is None):
        return RunCost(None, "none")
    usd, version = price(org, model, tin, tout, at)
    rate = usd_to(settings.currency, settings.fx_rates, fx)
    if usd is None or rate is None:
        # Unknown model, or a currency no rate is known for: unknown, never "free".
        return RunCost(None, "none", price_book_version=version)
    amount = (_dec(usd) * _dec(rate.rate)).quantize(MICRO, ROUND_HALF_UP)
    return RunCost(amount, "computed", usd, version, _shown(rate))


def hours_saved(baseline_minutes: float, agent_seconds: float | None, outcome: str) -> Decimal:
    """(baseline·60 - agent seconds) / 3600, to 3 places, never below 0; 0 for a failure."""
    if outcome == "failure":
        return Decimal("0.000")
    seconds = _dec(baseline_minutes) * 60 - _dec(agent_seconds or 0)
    hours = (seconds / 3600).quantize(HOURS, ROUND_HALF_UP)
    return max(hours, Decimal("0.000"))


def usd_cost(usd: float | None, settings: OrgSettings, fx: FxTable) -> RunCost:
    """A cost already priced in USD (a traced run's LLM and tool calls) in the org's currency:
    computed, or none when unknown or when the currency has no FX rate."""
    rate = usd_to(settings.currency, settings.fx_rates, fx)
    if usd is None or rate is None:
        return RunCost(None, "none", usd)
    amount = (_dec(usd) * _dec(rate.rate)).quantize(MICRO, ROUND_HALF_UP)
    return RunCost(amount, "computed", usd, fx=_shown(rate))


def _shown(fx: Fx) -> Fx | None:
    return None if fx.source == "identity" else fx


def compute(
    req: TrackRequest, settings: OrgSettings, catalogue: Catalogue, cost: RunCost
) -> Savings:
    """The savings of a task whose `cost` is resolved (`resolve_cost` for a tracked task,
    `usd_cost` for a traced run)."""
    baseline = resolve_baseline(req, settings, catalogue)
    hours = hours_saved(baseline.minutes, req.agent_duration_seconds, req.outcome)
    # From the rounded hours, so hours_saved x rate = cost_saved is what a reader can check.
    saved = (hours * _dec(settings.hourly_rate)).quantize(MONEY, ROUND_HALF_UP)
    net = saved - (cost.amount or Decimal(0))
    return Savings(
        baseline, settings.hourly_rate, settings.currency, hours, saved, cost, net.quantize(MICRO)
    )


def _dec(x: float | int) -> Decimal:
    # repr is the shortest string that round-trips: 4.1 is 4.1, not 4.0999999999999996447.
    return Decimal(repr(x)) if isinstance(x, float) else Decimal(x)
