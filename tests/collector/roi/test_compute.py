"""ROI arithmetic, the baseline stack, run cost and body validation, without a store or HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from collector.auth.settings import merge_patch
from collector.errors import ApiError
from collector.prices.book import parse_price_book
from collector.prices.fx import load_table
from collector.prices.layers import stack
from collector.roi.compute import (
    Pricer,
    Savings,
    UnknownTaskType,
    compute,
    hours_saved,
    processor_pricer,
    resolve_baseline,
    resolve_cost,
)
from collector.roi.request import parse_track
from collector.roi.settings import CustomType, OrgSettings, parse_settings
from collector.roi.tasktypes import load_catalogue, parse_catalogue
from processors.cost import CostConfig, CostProcessor

CATALOGUE = load_catalogue()
PRICE = processor_pricer(CostProcessor(CostConfig(), stack(None)))
EUR = OrgSettings(hourly_rate=45, currency="EUR", fx_rates={"EUR": 0.92})
FX = load_table()
AT = datetime(2026, 6, 1, 12, tzinfo=UTC)


def track(**fields: Any) -> Any:
    body = {"agent_id": "a", "task_type": "email_classification", "outcome": "success"}
    return parse_track({**body, **fields})


def savings(req: Any, settings: OrgSettings, price: Pricer = PRICE, at: datetime = AT) -> Savings:
    """What /v1/track computes for a task that occurred `at`."""
    cost = resolve_cost(req, settings, "acme", price, at=at, fx=FX)
    return compute(req, settings, CATALOGUE, cost)


def test_the_docs_example_numbers() -> None:
    s = savings(track(agent_duration_seconds=4), EUR)
    assert (s.baseline.minutes, s.baseline.source) == (4.0, "builtin")
    assert s.hours_saved == Decimal("0.066")  # (240 - 4) / 3600 = 0.06555… → 0.066
    assert s.cost_saved == Decimal("2.97")  # 0.066 x 45, from the rounded hours (not 2.95)
    assert (s.cost.amount, s.cost.source, s.net_saved) == (None, "none", Decimal("2.97"))


def test_hours_round_half_up_and_never_go_negative() -> None:
    assert hours_saved(1.0, 1.8, "success") == Decimal("0.016")  # 58.2 s = 0.01616…
    assert hours_saved(0.09, 0, "success") == Decimal("0.002")  # 5.4 s = 0.0015 → up
    assert hours_saved(1.0, 120, "success") == Decimal("0.000")
    assert hours_saved(60.0, None, "needs_review") == Decimal("1.000")
    assert hours_saved(60.0, 0, "failure") == Decimal("0.000")


def test_failure_saves_nothing_but_still_costs() -> None:
    s = savings(track(outcome="failure", agent_cost=0.5), EUR)
    assert (s.hours_saved, s.cost_saved, s.net_saved) == (0, 0, Decimal("-0.5"))
    assert s.cost.source == "provided"


def test_baseline_stack_in_order() -> None:
    settings = OrgSettings(
        task_type_overrides={"ticket_triage": 7.5},
        custom_task_types={"po_approval": CustomType(12.0)},
        fallback_baseline_minutes=3.0,
    )

    def source(**fields: Any) -> tuple[float, str]:
        b = resolve_baseline(track(**fields), settings, CATALOGUE)
        return b.minutes, b.source

    assert source(task_type="ticket_triage", human_baseline_minutes=9) == (9.0, "request")
    assert source(task_type="ticket_triage") == (7.5, "override")
    assert source(task_type="meeting_summary") == (15.0, "builtin")
    assert source(task_type="po_approval") == (12.0, "custom")
    assert source(task_type="whatever") == (3.0, "fallback")
    with pytest.raises(UnknownTaskType):
        resolve_baseline(track(task_type="whatever"), OrgSettings(), CATALOGUE)


def test_computed_cost_is_converted_into_the_org_currency() -> None:
    req = track(model="openai/gpt-4o-mini", tokens_in=1_000_000, tokens_out=1_000_000)
    s = savings(req, EUR)
    # 0.15 + 0.60 USD at 0.92 EUR per USD.
    assert (s.cost.source, s.cost.amount, s.cost.usd) == ("computed", Decimal("0.69"), 0.75)
    assert s.net_saved == s.cost_saved - Decimal("0.69")
    assert s.cost.fx is not None and (s.cost.fx.rate, s.cost.fx.source) == (0.92, "org")
    # No fx_rates of its own: the shipped ECB reference table (2024-06-28), shown with its date.
    # GBP per USD = 0.84638 / 1.0705; 0.75 USD of it, to 6 places.
    gbp = savings(req, OrgSettings(currency="GBP"))
    assert gbp.cost.source == "computed"
    assert gbp.cost.amount == (Decimal("0.75") * Decimal(repr(0.84638 / 1.0705))).quantize(
        Decimal("0.000001")
    )
    assert gbp.cost.fx is not None and gbp.cost.fx.date == "2024-06-28"
    eur = savings(req, OrgSettings(currency="EUR"))
    assert eur.cost.amount == Decimal("0.700607")  # 0.75 / 1.0705
    # `none` only for a currency no table knows.
    no_fx = savings(req, OrgSettings(currency="XTS"))
    assert no_fx.cost.source == "none" and no_fx.cost.amount is None
    unknown = savings(track(model="nope-1", tokens_in=5), EUR)
    assert unknown.cost.source == "none"
    # The older doc put model and tokens in audit_sample: still priced.
    old = track(audit_sample={"model": "gpt-4o-mini", "tokens_in": 1_000_000})
    assert savings(old, OrgSettings()).cost.amount == Decimal("0.15")


def test_a_task_is_priced_with_the_price_in_force_when_it_occurred() -> None:
    book = parse_price_book(
        {
            "version": "ops-1",
            "compiled_at": "2026-06-01",
            "models": [
                {"id": "acme-llm", "provider": "openai", "input": 1.0, "output": 1.0},
                {"id": "acme-llm", "provider": "openai", "input": 3.0, "output": 3.0,
                 "effective_from": "2026-06-01"},
            ],
        }
    )  # fmt: skip
    price = processor_pricer(CostProcessor(CostConfig(), stack(book)))
    req = track(model="acme-llm", tokens_in=1_000_000, tokens_out=0)
    usd = OrgSettings()
    before = savings(req, usd, price, datetime(2026, 5, 31, 23, 59, tzinfo=UTC))
    assert (before.cost.amount, before.cost.source) == (Decimal("1"), "computed")
    assert savings(req, usd, price, datetime(2026, 6, 1, tzinfo=UTC)).cost.amount == Decimal("3")


def test_validation_lists_every_failing_field() -> None:
    with pytest.raises(ApiError) as e:
        parse_track(
            {
                "task_type": 3,
                "outcome": "ok",
                "agent_duration_seconds": -1,
                "tokens_in": 1.5,
                "metadata": [],
                "audit_sample": {"input_excerpt": "x" * 2001, "extra": 1},
                "occurred_at": "yesterday",
                "human_baseline_minutes": True,
                "colour": "red",
            }
        )
    assert e.value.code == "validation_error" and e.value.details is not None
    fields = {d["field"] for d in e.value.details}
    assert fields == {
        "agent_id",
        "task_type",
        "outcome",
        "agent_duration_seconds",
        "tokens_in",
        "metadata",
        "audit_sample.input_excerpt",
        "audit_sample.extra",
        "occurred_at",
        "human_baseline_minutes",
    }  # fmt: skip  (the unknown top-level "colour" is ignored: issue 20)
    assert parse_track(
        {
            "agent_id": "a",
            "task_type": "t",
            "outcome": "success",
            "audit_sample": {"input_excerpt": "x" * 2000},
        }
    ).audit_sample == {"input_excerpt": "x" * 2000}


def test_traceparent_links_the_run() -> None:
    tp = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    req = parse_track({"agent_id": "a", "task_type": "t", "outcome": "success"}, tp)
    assert (req.trace_id, req.span_id) == ("ab" * 16, "cd" * 8)


def test_catalogue_is_complete_and_validated() -> None:
    assert len(CATALOGUE.types) >= 40
    for name in ("email_classification", "ticket_triage", "support_reply_draft",
                 "invoice_data_extraction", "meeting_summary", "lead_enrichment",
                 "code_review_comment"):  # fmt: skip
        assert name in CATALOGUE
    assert CATALOGUE.get("email_classification").baseline_minutes == 4.0  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="listed twice"):
        entry = {"name": "a", "baseline_minutes": 1, "description": "d"}
        parse_catalogue({"version": "1", "task_types": [entry, entry]})
    with pytest.raises(ValueError, match="baseline_minutes"):
        parse_catalogue(
            {
                "version": "1",
                "task_types": [{"name": "a", "baseline_minutes": 0, "description": "d"}],
            }
        )


def test_settings_merge_patch_and_validation() -> None:
    merged = merge_patch({"currency": "EUR", "fx_rates": {"EUR": 0.9, "GBP": 0.8}, "x": 1},
                         {"fx_rates": {"GBP": None}, "hourly_rate": 45})  # fmt: skip
    assert merged == {"currency": "EUR", "fx_rates": {"EUR": 0.9}, "x": 1, "hourly_rate": 45}
    settings, problems = parse_settings(merged, CATALOGUE)
    # Self-hosted orgs default to the unlimited plan: 1000 a second per key, no monthly cap.
    assert problems == [] and settings.fx_rates == {"EUR": 0.9} and settings.rate_limit == 1000
    _, problems = parse_settings(
        {
            "currency": "euro",
            "plan": "gold",
            "custom_task_types": {"ticket_triage": {"baseline_minutes": 3}},
            "limits": {"monthly_events": 0},
        },
        CATALOGUE,
    )
    assert {p["field"] for p in problems} == {
        "currency", "plan", "custom_task_types.ticket_triage", "limits.monthly_events"
    }  # fmt: skip
