"""Cost of normalised LLM spans from a small hand-written price book, arithmetic checked by hand.

Builds batches in the shape `NormaliseProcessor` leaves them and runs `CostProcessor` over them.
"""

from __future__ import annotations

from typing import Any

import pytest

from collector.model import Batch, Signal
from collector.prices.book import load_price_book, parse_price_book
from processors.cost import CostConfig, CostProcessor
from processors.normalise.span import normalised_columns

BOOK = parse_price_book(
    {
        "version": "test-1",
        "compiled_at": "2026-01-01",
        "models": [
            {
                "id": "claude-sonnet-4-20250514",
                "provider": "anthropic",
                "openrouter_id": "anthropic/claude-sonnet-4",
                "aliases": ["claude-sonnet-4"],
                "input": 3.0,
                "output": 15.0,
                "cache_read": 0.3,
                "cache_write": 3.75,
                "reasoning": 15.0,
                "tiers": [
                    {
                        "above_input_tokens": 200000,
                        "input": 6.0,
                        "output": 22.5,
                        "cache_read": 0.6,
                        "cache_write": 7.5,
                        "reasoning": 22.5,
                    }
                ],
            },
            {
                "id": "thinker-1",
                "provider": "acme",
                "input": 1.0,
                "output": 2.0,
                "reasoning": 10.0,
            },
        ],
    }
)


def llm_batch(*spans: dict[str, Any]) -> Batch:
    n = len(spans)
    columns: dict[str, list[Any]] = normalised_columns(n)
    for i, s in enumerate(spans):
        for key, value in {"span_type": "llm", "usage_is_aggregate": False, **s}.items():
            columns[key][i] = value
    return Batch(
        signal=Signal.TRACES,
        org="o",
        columns=columns,
        attributes=[{} for _ in spans],
        resources=[{} for _ in spans],
        events=[[] for _ in spans],
    )


def priced(*spans: dict[str, Any], config: CostConfig | None = None) -> list[dict[str, Any]]:
    out = CostProcessor(config or CostConfig(), BOOK).process(llm_batch(*spans))
    keys = ("cost_usd", "cost_source", "price_book_version")
    return [{k: out.columns[k][i] for k in keys} for i in range(len(out))]


def test_cached_tokens_priced_at_their_rates() -> None:
    (row,) = priced(
        {
            "model": "claude-sonnet-4-20250514",
            "provider": "anthropic",
            "input_tokens": 10_000,  # inclusive: 2,000 fresh + 7,000 read + 1,000 written
            "output_tokens": 500,
            "cache_read_tokens": 7_000,
            "cache_write_tokens": 1_000,
        }
    )
    # 2000*3 + 7000*0.3 + 1000*3.75 + 500*15 = 6000 + 2100 + 3750 + 7500 = 19350 per million
    assert row["cost_usd"] == pytest.approx(0.01935)
    assert (row["cost_source"], row["price_book_version"]) == ("computed", "test-1")


def test_reasoning_at_its_own_rate() -> None:
    (row,) = priced({"model": "thinker-1", "input_tokens": 1000, "output_tokens": 3000,
                     "reasoning_tokens": 2000})  # fmt: skip
    # 1000*1 + (3000-2000)*2 + 2000*10 = 1000 + 2000 + 20000 = 23000 per million
    assert row["cost_usd"] == pytest.approx(0.023)


def test_long_context_tier_chosen_by_input_tokens() -> None:
    rows = priced(
        {"model": "anthropic/claude-sonnet-4", "input_tokens": 200_000, "output_tokens": 1000},
        {"model": "anthropic/claude-sonnet-4", "input_tokens": 250_000, "output_tokens": 1000},
    )
    # at the threshold: 200000*3 + 1000*15 = 615000; above: 250000*6 + 1000*22.5 = 1522500
    assert rows[0]["cost_usd"] == pytest.approx(0.615)
    assert rows[1]["cost_usd"] == pytest.approx(1.5225)


def test_unknown_model_is_none_never_zero() -> None:
    (row,) = priced({"model": "mystery-9000", "input_tokens": 10, "output_tokens": 10})
    assert (row["cost_usd"], row["cost_source"]) == (None, "none")


def test_no_usage_is_none() -> None:
    (row,) = priced({"model": "claude-sonnet-4"})
    assert (row["cost_usd"], row["cost_source"]) == (None, "none")


def test_falls_back_to_request_model() -> None:
    (row,) = priced({"model": "unlisted-snapshot", "request_model": "thinker-1",
                     "input_tokens": 1_000_000, "output_tokens": 0})  # fmt: skip
    assert row["cost_usd"] == pytest.approx(1.0)


def test_provided_cost_is_kept() -> None:
    (row,) = priced({"model": "thinker-1", "input_tokens": 5, "cost_usd": 0.5,
                     "cost_source": "provided"})  # fmt: skip
    assert (row["cost_usd"], row["cost_source"], row["price_book_version"]) == (
        0.5,
        "provided",
        None,
    )


def test_aggregate_and_non_llm_spans_are_not_priced() -> None:
    rows = priced(
        {"span_type": "agent", "model": "thinker-1", "input_tokens": 9, "usage_is_aggregate": True},
        {"span_type": "llm", "model": "thinker-1", "input_tokens": 9, "usage_is_aggregate": True},
        {"span_type": "tool", "model": "thinker-1", "input_tokens": 9},
    )
    assert all(r == {"cost_usd": None, "cost_source": None, "price_book_version": None}
               for r in rows)  # fmt: skip


def test_overrides_replace_book_prices() -> None:
    config = CostConfig(overrides={"thinker-1": {"input": 4.0}, "house-model": {"input": 1.0,
                                   "output": 1.0}})  # fmt: skip
    rows = priced(
        {"model": "thinker-1", "input_tokens": 1_000_000, "output_tokens": 0},
        {"model": "house-model", "input_tokens": 500_000, "output_tokens": 500_000},
        config=config,
    )
    assert rows[0]["cost_usd"] == pytest.approx(4.0)
    assert rows[1]["cost_usd"] == pytest.approx(1.0)
    assert rows[0]["price_book_version"] == "test-1+overrides"


def test_shipped_book_prices_gpt_4o_with_cache() -> None:
    processor = CostProcessor(CostConfig(), load_price_book())
    batch = llm_batch({"model": "gpt-4o-2024-08-06", "provider": "openai", "input_tokens": 1000,
                       "output_tokens": 100, "cache_read_tokens": 400})  # fmt: skip
    out = processor.process(batch)
    # 600*2.5 + 400*1.25 + 100*10 = 1500 + 500 + 1000 = 3000 per million
    assert out.columns["cost_usd"][0] == pytest.approx(0.003)
