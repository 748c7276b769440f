"""The price stack: the operator's book over the shipped corrections over genai-prices (the
bundled data, or a fetched data file's)."""

from __future__ import annotations

from datetime import UTC, datetime

from collector.prices.book import PriceBook, parse_price_book
from collector.prices.genai import GenaiLayer, providers_from_json
from collector.prices.layers import stack
from collector.prices.pricing import Usage

AT = datetime(2026, 6, 1, tzinfo=UTC)
MILLION = Usage(input=1_000_000)


def book(models: list[dict[str, object]]) -> PriceBook:
    return parse_price_book({"version": "ops-1", "compiled_at": "2026-06-01", "models": models})


def source_of(
    model: str,
    provider: str | None,
    operator: PriceBook | None = None,
    genai: GenaiLayer | None = None,
) -> tuple[str, float] | None:
    quote = stack(operator, genai=genai).quote(model, provider, MILLION, AT, None)
    return None if quote is None else (quote.source, quote.usd)


def test_the_order_of_the_layers() -> None:
    operator = book([{"id": "gpt-4o", "provider": "openai", "input": 1.0, "output": 1.0}])
    assert source_of("gpt-4o", "openai", operator=None) == ("genai-prices", 2.5)
    assert source_of("gpt-4o", "openai", operator=operator) == ("operator", 1.0)
    # deepseek-chat is one of the shipped corrections: above genai-prices, under the operator.
    assert source_of("deepseek-chat", "deepseek", operator=None) == ("agentledger", 0.28)
    assert source_of("gpt-4o", "openai", operator=book([])) == ("genai-prices", 2.5)


def test_a_fetched_genai_data_file_replaces_the_bundled_data() -> None:
    model = {"id": "acme-1", "match": {"equals": "acme-1"}, "prices": {"input_mtok": "4"}}
    provider = {"id": "acme", "name": "Acme", "api_pattern": "x"}
    raw = [{**provider, "model_match": {"starts_with": "acme"}, "models": [model]}]
    fetched = GenaiLayer(providers_from_json(raw), "genai-prices data of 2026-06-01")
    assert source_of("acme-1", None, operator=None, genai=fetched) == ("genai-prices", 4.0)
    assert source_of("gpt-4o", "openai", operator=None, genai=fetched) is None
    assert source_of("acme-1", None, operator=None) is None
