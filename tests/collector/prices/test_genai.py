"""genai-prices as the source under our books: offline, resolving every spelling, and the nine
prices where it and our old book disagreed, each settled against the vendor (docs/prices.md).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from collector.prices.book import load_price_book
from collector.prices.genai import GenaiLayer, providers_from_json
from collector.prices.layers import stack
from collector.prices.pricing import Usage

AT = datetime(2026, 12, 1, 12, tzinfo=UTC)
MILLION = Usage(input=1_000_000, output=1_000_000)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("genai-prices tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def test_pricing_makes_no_network_call(no_network: None) -> None:
    layer = GenaiLayer()
    quote = layer.quote("gpt-4o", "openai", MILLION, AT, "priority")
    assert quote is not None and quote.source == "genai-prices"
    assert stack(None).quote("claude-opus-4-8", "anthropic", MILLION, AT, None) is not None
    # The package's own auto-updater never started: its background thread does not exist.
    import threading

    assert not any(t.name == "genai_prices:update" for t in threading.enumerate())


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-mini-2024-07-18", None),  # dated vendor id
        ("openai/gpt-4o-mini", None),  # OpenRouter vendor/model
        ("azure/gpt-4o-mini", "azure.ai.openai"),  # provider-prefixed
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "aws.bedrock"),  # Bedrock profile
        ("claude-sonnet-4@20250514", "gcp.vertex_ai"),  # Vertex
        ("models/gemini-2.5-flash", "gcp.gemini"),  # Gemini API path
        ("anthropic/claude-opus-4.8", None),  # the track doc's example
    ],
)
def test_every_form_agents_send_resolves(model: str, provider: str | None) -> None:
    assert GenaiLayer().quote(model, provider, MILLION, AT, None) is not None, model


def test_a_genai_prices_data_file_loads_and_bad_ones_are_refused() -> None:
    raw = [
        {
            "id": "acme",
            "name": "Acme",
            "api_pattern": "https://acme",
            "model_match": {"starts_with": "acme"},
            "models": [
                {
                    "id": "acme-1",
                    "match": {"equals": "acme-1"},
                    "prices": {"input_mtok": "1", "output_mtok": "2"},
                }
            ],
        }
    ]
    layer = GenaiLayer(providers_from_json(raw), "acme data")
    quote = layer.quote("acme-1", None, MILLION, AT, None)
    assert quote is not None and quote.usd == pytest.approx(3.0)
    for bad in ({}, [], [{"id": 1}]):
        with pytest.raises(ValueError, match="genai-prices data file"):
            providers_from_json(bad)


TEXT_CALLS = [
    Usage(input=1000, output=200),
    Usage(input=300_000, output=5000, cache_read=100_000, cache_write=20_000, reasoning=1000),
    Usage(input=50, output=0, cache_read=50),  # all cached
    Usage(input=0, output=10),
    Usage(input=1_000_001, output=1, cache_write=1),  # above every long-context tier
]


def test_text_calls_priced_directly_as_genai_prices_would() -> None:
    """The direct arithmetic of text-token calls (genai.py) against the package's own
    calculation, for every price of every bundled model."""
    from genai_prices import types as gp
    from genai_prices.data import providers

    from collector.prices.genai import _plain_total, _usage

    direct = 0
    for provider in providers:
        for model in provider.models:
            dated = model.prices if isinstance(model.prices, list) else [model.prices]
            for entry in dated:
                price = entry.prices if isinstance(entry, gp.ConditionalPrice) else entry
                for usage in TEXT_CALLS:
                    ours = _plain_total(price, usage)
                    if ours is None:
                        continue
                    direct += 1
                    theirs = price.calc_price(_usage(usage))["total_price"]
                    assert float(ours) == pytest.approx(float(theirs), rel=1e-12, abs=1e-15), (
                        model.id, usage,
                    )  # fmt: skip
    assert direct > 10_000  # nearly every price of ~2,300 models, five calls each


# --- the nine disagreements ------------------------------------------------------------------
# (model, provider, the layer that must price it, input and output USD per million at AT)
DECIDED = [
    # No OpenAI API price exists for the open-weight gpt-oss: ours (a host's list price) kept.
    ("gpt-oss-120b", "openai", "agentledger", 0.15, 0.6),
    ("gpt-oss-20b", "openai", "agentledger", 0.05, 0.2),
    # DeepSeek's price page: 0.28 / 0.42 since V3.2; genai-prices still has the pre-2025-09 list.
    ("deepseek-chat", "deepseek", "agentledger", 0.28, 0.42),
    ("deepseek-reasoner", "deepseek", "agentledger", 0.28, 0.42),
    ("deepseek-chat-v3.1", "deepseek", "agentledger", 0.28, 0.42),
    # Gemini 1.0 Pro: $0.50 / $1.50 a million tokens; genai-prices has Vertex's per-character rate.
    ("gemini-1.0-pro", "gcp.gemini", "agentledger", 0.5, 1.5),
    # Gemini 1.5 Flash-8B: $0.0375 / $0.15; genai-prices matches it to 1.5 Flash.
    ("gemini-1.5-flash-8b", "gcp.gemini", "agentledger", 0.0375, 0.15),
    # Gemini 2.5 Flash Image: text output $2.50, image output $30 (per image token): genai-prices.
    ("gemini-2.5-flash-image", "gcp.gemini", "genai-prices", 0.3, 2.5),
    # mistral-embed: $0.10 a million input tokens, no output price.
    ("mistral-embed", "mistral_ai", "agentledger", 0.1, 0.0),
]


@pytest.mark.parametrize(("model", "provider", "source", "inp", "out"), DECIDED)
def test_each_disagreement_is_settled(
    model: str, provider: str, source: str, inp: float, out: float
) -> None:
    prices = stack(None)
    # 100k tokens: below every long-context tier of these models.
    quote_in = prices.quote(model, provider, Usage(input=100_000), AT, None)
    quote_out = prices.quote(model, provider, Usage(output=100_000), AT, None)
    assert quote_in is not None and quote_out is not None
    assert quote_in.source == source
    assert (quote_in.usd, quote_out.usd) == (pytest.approx(inp / 10), pytest.approx(out / 10))


def test_deepseek_history_is_dated() -> None:
    prices = stack(None)

    def cost(day: datetime) -> float:
        quote = prices.quote("deepseek-chat", "deepseek", Usage(input=1_000_000), day, None)
        assert quote is not None
        return quote.usd

    # Before 2025-09-05 genai-prices answers (its UTC 00:30-16:30 standard price), then ours.
    assert cost(datetime(2025, 8, 1, 12, tzinfo=UTC)) == pytest.approx(0.27)
    assert cost(datetime(2025, 8, 1, 20, tzinfo=UTC)) == pytest.approx(0.135)  # night discount
    assert cost(datetime(2025, 9, 10, tzinfo=UTC)) == pytest.approx(0.56)
    assert cost(datetime(2025, 10, 1, tzinfo=UTC)) == pytest.approx(0.28)


def test_gemini_image_output_priced_per_image_token_when_reported() -> None:
    usage = Usage(input=1000, output=1290, output_image=1290)  # one 1024px image
    quote = GenaiLayer().quote("gemini-2.5-flash-image", "gcp.gemini", usage, AT, None)
    assert quote is not None and quote.usd == pytest.approx((1000 * 0.3 + 1290 * 30) / 1e6)


def test_every_shipped_correction_outranks_genai_prices() -> None:
    prices = stack(None)
    for model in load_price_book().models:
        quote = prices.quote(model.id, model.provider, MILLION, AT, None)
        assert quote is not None and quote.source == "agentledger", model.id
