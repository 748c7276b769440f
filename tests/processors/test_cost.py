"""Cost of normalised LLM and tool spans: a small hand-written book, then the shipped stack
(corrections over genai-prices); arithmetic checked by hand.

Builds batches in the shape `NormaliseProcessor` leaves them and runs `CostProcessor` over them.
"""

from __future__ import annotations

from typing import Any

import pytest

from collector.model import Batch, Signal
from collector.prices.book import parse_price_book
from collector.prices.layers import stack
from collector.prices.pricing import BookLayer
from processors.cost import CostConfig, CostProcessor, OrgCost, ToolPrice
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


def llm_batch(*spans: dict[str, Any], org: str = "o") -> Batch:
    n = len(spans)
    columns: dict[str, list[Any]] = normalised_columns(n)
    columns["start_time_unix_nano"] = [None] * n
    attributes: list[dict[str, Any]] = []
    for i, s in enumerate(spans):
        attributes.append(s.get("attributes", {}))
        for key, value in {"span_type": "llm", "usage_is_aggregate": False, **s}.items():
            if key != "attributes":
                columns[key][i] = value
    return Batch(
        signal=Signal.TRACES,
        org=org,
        columns=columns,
        attributes=attributes,
        resources=[{} for _ in spans],
        events=[[] for _ in spans],
    )


def priced(
    *spans: dict[str, Any], config: CostConfig | None = None, org: str = "o"
) -> list[dict[str, Any]]:
    out = CostProcessor(config or CostConfig(), BookLayer(BOOK, "book")).process(
        llm_batch(*spans, org=org)
    )
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
    assert all(
        r == {"cost_usd": None, "cost_source": None, "price_book_version": None} for r in rows
    )  # fmt: skip (an unpriced tool is not "none": nothing to price)


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
    # The override names itself as the source; the rest of thinker-1's rates came from the book.
    assert rows[0]["price_book_version"] == "config"


def test_shipped_book_prices_gpt_4o_with_cache() -> None:
    processor = CostProcessor(CostConfig(), stack(None))
    batch = llm_batch({"model": "gpt-4o-2024-08-06", "provider": "openai", "input_tokens": 1000,
                       "output_tokens": 100, "cache_read_tokens": 400})  # fmt: skip
    out = processor.process(batch)
    # 600*2.5 + 400*1.25 + 100*10 = 1500 + 500 + 1000 = 3000 per million
    assert out.columns["cost_usd"][0] == pytest.approx(0.003)


# --- prices as of the call ------------------------------------------------------------------

FEB, MAR = 1_771_200_000 * 10**9, 1_773_619_200 * 10**9  # 2026-02-16 and 2026-03-16, UTC
DATED = parse_price_book(
    {
        "version": "dated-1",
        "compiled_at": "2026-03-01",
        "models": [
            {"id": "dated-1", "provider": "acme", "input": 1.0, "output": 1.0},
            {"id": "dated-1", "provider": "acme", "input": 2.0, "output": 2.0,
             "effective_from": "2026-03-01"},
        ],
    }
)  # fmt: skip


def test_a_price_change_between_two_calls_prices_each_with_its_own() -> None:
    processor = CostProcessor(CostConfig(), BookLayer(DATED, "book"))
    out = processor.process(
        llm_batch(
            {"model": "dated-1", "input_tokens": 1_000_000, "output_tokens": 0,
             "start_time_unix_nano": FEB},
            {"model": "dated-1", "input_tokens": 1_000_000, "output_tokens": 0,
             "start_time_unix_nano": MAR},
        )
    )  # fmt: skip
    assert out.columns["cost_usd"] == [pytest.approx(1.0), pytest.approx(2.0)]
    assert out.columns["price_effective_from"] == [None, "2026-03-01"]
    assert out.columns["price_source"] == ["book", "book"]


def test_a_dated_override_starts_on_its_day() -> None:
    config = CostConfig(overrides={"dated-1": {"input": 5.0, "effective_from": "2026-03-10"}})
    processor = CostProcessor(config, BookLayer(DATED, "book"))
    out = processor.process(
        llm_batch(
            {"model": "dated-1", "input_tokens": 1_000_000, "start_time_unix_nano": FEB},
            {"model": "dated-1", "input_tokens": 1_000_000, "start_time_unix_nano": MAR},
        )
    )
    assert out.columns["cost_usd"] == [pytest.approx(1.0), pytest.approx(5.0)]
    assert out.columns["price_source"] == ["book", "override"]


# --- the shipped stack: genai-prices with tiers and modes, hand-computed ----------------------

NOV = 1_793_923_200 * 10**9  # 2026-11-06 UTC: after genai-prices dated its service tier prices


def shipped(*spans: dict[str, Any], config: CostConfig | None = None) -> Batch:
    return CostProcessor(config or CostConfig(), stack(None)).process(llm_batch(*spans))


def test_cached_reads_writes_and_reasoning_on_genai_prices() -> None:
    out = shipped(
        {"model": "claude-sonnet-4-20250514", "provider": "anthropic", "input_tokens": 10_000,
         "output_tokens": 2_000, "cache_read_tokens": 6_000, "cache_write_tokens": 1_000,
         "reasoning_tokens": 1_500, "start_time_unix_nano": NOV},
    )  # fmt: skip
    # 3000 fresh * 3 + 6000 * 0.3 + 1000 * 3.75 + 2000 output (reasoning billed as output) * 15
    # = 9000 + 1800 + 3750 + 30000 = 44550 per million
    assert out.columns["cost_usd"][0] == pytest.approx(0.04455)
    assert out.columns["price_source"][0] == "genai-prices"
    assert out.columns["price_book_version"][0].startswith("genai-prices ")


def test_long_context_tier_on_genai_prices() -> None:
    out = shipped(
        {"model": "gemini-2.5-pro", "provider": "gcp.gemini", "input_tokens": 100_000,
         "output_tokens": 1_000, "start_time_unix_nano": NOV},
        {"model": "gemini-2.5-pro", "provider": "gcp.gemini", "input_tokens": 300_000,
         "output_tokens": 1_000, "cache_read_tokens": 100_000, "start_time_unix_nano": NOV},
    )  # fmt: skip
    # <= 200k: 100000*1.25 + 1000*10 = 135000; > 200k (every token at the tier's rate):
    # 200000*2.5 + 100000*0.25 + 1000*15 = 500000 + 25000 + 15000 = 540000
    assert out.columns["cost_usd"] == [pytest.approx(0.135), pytest.approx(0.54)]


@pytest.mark.parametrize(
    ("tier", "expected", "mode"),
    [
        # 1000*in + 500 cached*cache_read... see below; gpt-5: 1.25 / 0.125 / 10
        (None, (500 * 1.25 + 500 * 0.125 + 1000 * 10) / 1e6, None),
        ("flex", (500 * 0.625 + 500 * 0.0625 + 1000 * 5) / 1e6, "flex"),
        ("priority", (500 * 2.5 + 500 * 0.25 + 1000 * 20) / 1e6, "priority"),
        ("batch", (500 * 0.625 + 500 * 0.0625 + 1000 * 5) / 1e6, "batch"),
        ("default", (500 * 1.25 + 500 * 0.125 + 1000 * 10) / 1e6, None),
    ],
)
def test_service_tier_from_the_response_attributes(
    tier: str | None, expected: float, mode: str | None
) -> None:
    attributes = {"openai.response.service_tier": tier} if tier else {}
    out = shipped(
        {"model": "gpt-5", "provider": "openai", "input_tokens": 1000, "output_tokens": 1000,
         "cache_read_tokens": 500, "start_time_unix_nano": NOV, "attributes": attributes},
    )  # fmt: skip
    assert out.columns["cost_usd"][0] == pytest.approx(expected)
    assert out.columns["price_mode"][0] == mode


def test_audio_tokens_from_span_attributes() -> None:
    out = shipped(
        {"model": "gpt-4o-realtime-preview", "provider": "openai", "input_tokens": 1_000,
         "output_tokens": 1_000, "start_time_unix_nano": NOV,
         "attributes": {"llm.token_count.prompt_details.audio": 600,
                        "llm.token_count.completion_details.audio": 400}},
        {"model": "gpt-4o-realtime-preview", "provider": "openai", "input_tokens": 1_000,
         "output_tokens": 1_000, "start_time_unix_nano": NOV},
    )  # fmt: skip
    # text 5 / 20, audio 40 / 80 per million: 400*5 + 600*40 + 600*20 + 400*80 = 70000
    assert out.columns["cost_usd"] == [pytest.approx(0.07), pytest.approx(0.025)]


def test_track_doc_model_resolves_from_every_spelling() -> None:
    names = ["anthropic/claude-opus-4.8", "claude-opus-4-8", "claude-opus-4.8"]
    out = shipped(*({"model": m, "input_tokens": 1_000_000, "output_tokens": 0} for m in names))
    assert out.columns["cost_usd"] == [pytest.approx(5.0)] * 3


# --- per-org model prices -------------------------------------------------------------------


def test_org_override_over_the_global_one() -> None:
    config = CostConfig(
        overrides={"thinker-1": {"input": 4.0}},
        orgs={"acme": OrgCost(models={"thinker-1": {"input": 3.0}})},
    )
    span = {"model": "thinker-1", "input_tokens": 1_000_000, "output_tokens": 0}
    assert priced(span, config=config, org="acme")[0]["cost_usd"] == pytest.approx(3.0)
    assert priced(span, config=config, org="other")[0]["cost_usd"] == pytest.approx(4.0)


def test_partial_override_of_a_genai_prices_model() -> None:
    config = CostConfig(overrides={"gpt-4o": {"input": 2.0}})  # negotiated input rate only
    out = shipped({"model": "gpt-4o-2024-08-06", "provider": "openai", "input_tokens": 1_000_000,
                   "output_tokens": 100_000}, config=config)  # fmt: skip
    assert out.columns["cost_usd"][0] == pytest.approx(2.0 + 1.0)  # output stays 10/M
    assert out.columns["price_source"][0] == "override"


# --- tools ----------------------------------------------------------------------------------

TOOLS = CostConfig(
    tools={
        "web_search": ToolPrice(per_call=0.01),
        "scrape": ToolPrice(per_unit=0.002, unit_attribute="scrape.pages"),
    },
    orgs={"acme": OrgCost(tools={"web_search": ToolPrice(per_call=0.004)})},
)


def tool(name: str, **attributes: Any) -> dict[str, Any]:
    return {"span_type": "tool", "tool_name": name, "attributes": attributes}


def test_tools_priced_per_call_and_per_unit() -> None:
    out = CostProcessor(TOOLS, BookLayer(BOOK, "book")).process(
        llm_batch(
            tool("web_search"),
            tool("scrape", **{"scrape.pages": 7}),
            tool("scrape", **{"scrape.pages": "3"}),
            tool("scrape"),  # the unit attribute is missing: unknown, never $0
            tool("calculator"),  # not priced: nothing to say
        )
    )
    assert out.columns["cost_usd"] == [
        pytest.approx(0.01), pytest.approx(0.014), pytest.approx(0.006), None, None,
    ]  # fmt: skip
    assert out.columns["cost_source"] == ["computed", "computed", "computed", "none", None]
    assert out.columns["price_source"][:2] == ["tool-config", "tool-config"]


def test_org_tool_price_over_the_global_one() -> None:
    out = CostProcessor(TOOLS, BookLayer(BOOK, "book")).process(
        llm_batch(tool("web_search"), org="acme")
    )
    assert out.columns["cost_usd"] == [pytest.approx(0.004)]
    assert out.columns["price_source"] == ["tool-config:org"]


@pytest.mark.parametrize(
    ("price", "problem"),
    [
        (ToolPrice(), "exactly one"),
        (ToolPrice(per_call=1.0, per_unit=1.0, unit_attribute="x"), "exactly one"),
        (ToolPrice(per_unit=1.0), "unit_attribute"),
        (ToolPrice(per_call=-1.0), "non-negative"),
    ],
)
def test_tool_price_validation(price: ToolPrice, problem: str) -> None:
    assert any(problem in p for p in price.validate())
