"""Prices LLM spans that did not report a cost, from the price book handed in at construction.

Runs after `normalise.py` on the same batch: reads its token and model columns, fills `cost_usd`,
`cost_source` and `price_book_version`; the batch then goes to the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector.model import Batch, Signal
from collector.prices.book import PriceBook, Rates

_PER_MILLION = 1_000_000


@dataclass(frozen=True)
class CostConfig:
    """`overrides`: model name → `prices.json` entry fields (e.g. a negotiated rate), merged over
    the shipped book for every org; `orgs`: org name → more overrides for that org alone."""

    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    orgs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


class CostProcessor:
    """Raises ValueError at construction when an override is not a valid price entry."""

    def __init__(self, config: CostConfig, price_book: PriceBook) -> None:
        self._book = price_book.with_overrides(config.overrides)
        self._org_books = {
            org: self._book.with_overrides(overrides) for org, overrides in config.orgs.items()
        }

    def book_for(self, org: str) -> PriceBook:
        return self._org_books.get(org, self._book)

    def process(self, batch: Batch) -> Batch:
        if batch.signal is not Signal.TRACES:
            return batch
        n = len(batch)
        nones: list[Any] = [None] * n
        col = batch.columns.get
        span_types = col("span_type", nones)
        aggregate = col("usage_is_aggregate", nones)
        cost = list(col("cost_usd", nones))
        source = list(col("cost_source", nones))
        version = list(col("price_book_version", nones))
        models, requests = col("model", nones), col("request_model", nones)
        providers = col("provider", nones)
        tokens = [
            col(name, nones)
            for name in (
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
                "reasoning_tokens",
            )
        ]
        book = self.book_for(batch.org)
        for i in range(n):
            if span_types[i] != "llm" or source[i] == "provided" or aggregate[i]:
                continue
            version[i] = book.version
            price = None
            if models[i]:
                price = book.lookup(models[i], providers[i])
            if price is None and requests[i] and requests[i] != models[i]:
                price = book.lookup(requests[i], providers[i])
            inp, out, read, write, reasoning = (t[i] for t in tokens)
            if price is None or (inp is None and out is None):
                cost[i], source[i] = None, "none"
                continue
            rates = price.rates_for(inp or 0)
            cost[i] = token_cost(
                rates,
                inp=inp or 0,
                out=out or 0,
                cache_read=read or 0,
                cache_write=write or 0,
                reasoning=reasoning or 0,
            )
            source[i] = "computed"
        batch.set_column("cost_usd", cost)
        batch.set_column("cost_source", source)
        batch.set_column("price_book_version", version)
        return batch


def token_cost(
    rates: Rates, *, inp: int, out: int, cache_read: int, cache_write: int, reasoning: int
) -> float:
    """USD for one call; `inp` includes the cache reads and writes, `out` the reasoning tokens."""
    uncached = max(inp - cache_read - cache_write, 0)
    visible = max(out - reasoning, 0)
    micro = (
        uncached * rates.input
        + cache_read * rates.cache_read
        + cache_write * rates.cache_write
        + visible * rates.output
        + reasoning * rates.reasoning
    )
    return micro / _PER_MILLION
