"""The pure price lookup: token arithmetic by hand, layers tried in order, dated book versions,
and config overrides completed from the layer that prices the model on their day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from collector.prices.book import Rates, parse_price_book
from collector.prices.pricing import BookLayer, Layered, Usage, token_cost, with_overrides

DAY = datetime(2026, 6, 1, 12, tzinfo=UTC)
BOOK = parse_price_book(
    {
        "version": "ops-3",
        "compiled_at": "2026-06-01",
        "models": [
            {"id": "m-1", "provider": "openai", "input": 1.0, "output": 4.0, "cache_read": 0.5},
            {"id": "m-1", "provider": "openai", "input": 2.0, "output": 8.0,
             "effective_from": "2026-06-01"},
        ],
    }
)  # fmt: skip
OTHER = parse_price_book(
    {
        "version": "other-1",
        "compiled_at": "2026-01-01",
        "models": [{"id": "m-2", "provider": "acme", "input": 3.0, "output": 3.0}],
    }
)


def test_token_cost_by_hand() -> None:
    rates = Rates(input=2.0, output=8.0, cache_read=0.5, cache_write=2.5, reasoning=10.0)
    usage = Usage(input=1000, output=500, cache_read=200, cache_write=100, reasoning=100)
    # 700 uncached x 2 + 200 x 0.5 + 100 x 2.5 + 400 visible x 8 + 100 reasoning x 10
    assert token_cost(rates, usage) == pytest.approx((1400 + 100 + 250 + 3200 + 1000) / 1e6)


def test_a_book_layer_quotes_the_version_in_force_and_names_it() -> None:
    layer = BookLayer(BOOK, "operator")
    million = Usage(input=1_000_000)
    before = layer.quote("m-1", "openai", million, datetime(2026, 5, 31, 23, tzinfo=UTC), None)
    after = layer.quote("m-1", "openai", million, DAY, None)
    assert before is not None and (before.usd, before.effective_from) == (1.0, None)
    assert after is not None and (after.usd, after.effective_from) == (2.0, date(2026, 6, 1))
    assert (after.source, after.version, after.model) == ("operator", "ops-3", "m-1")
    assert layer.quote("m-2", None, million, DAY, None) is None


def test_layers_answer_in_order() -> None:
    stack = Layered([BookLayer(BOOK, "first"), BookLayer(OTHER, "second")])
    first = stack.quote("m-1", None, Usage(input=10), DAY, None)
    second = stack.quote("m-2", None, Usage(input=10), DAY, None)
    assert first is not None and first.source == "first"
    assert second is not None and second.source == "second"
    assert stack.quote("m-3", None, Usage(input=10), DAY, None) is None
    assert stack.version == "ops-3+other-1"
    entry = stack.entry("m-2", None, DAY)  # what an override of m-2 is completed from
    assert entry is not None and (entry["id"], entry["input"]) == ("m-2", 3.0)


def test_an_override_names_only_what_it_changes() -> None:
    under = Layered([BookLayer(BOOK, "operator")])
    # Completed from the version in force on the override's day: output 8, not 4.
    prices = with_overrides(under, {"m-1": {"input": 1.5}}, "override", DAY)
    quote = prices.quote("m-1", "openai", Usage(input=1_000_000, output=1_000_000), DAY, None)
    assert quote is not None and (quote.usd, quote.source) == (1.5 + 8.0, "override")
    # A model no layer knows needs its own input and output.
    with pytest.raises(ValueError, match=r"override\.new-model"):
        with_overrides(under, {"new-model": {"input": 1.0}}, "override", DAY)
    assert with_overrides(under, {}, "override", DAY) is under
