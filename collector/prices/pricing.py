"""The price lookup the cost processor is handed: what one call cost, and which price said so.

Pure: layers (dated price books, the genai-prices data in `genai.py`) are loaded outside by
`collector/prices/layers.py` and stacked here; the first layer that knows the model at the
call's start time answers, and its answer names its source, version and the price's date.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from collector.prices.book import ModelPrice, PriceBook, Rates, entry_of, parse_model

_PER_MILLION = 1_000_000


@dataclass(frozen=True)
class Usage:
    """Token counts of one call. `input` includes cache reads and writes (and audio/image input),
    `output` includes reasoning (and audio/image output): the span columns' convention."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    input_audio: int = 0
    output_audio: int = 0
    input_image: int = 0
    output_image: int = 0


@dataclass(frozen=True)
class Quote:
    """What a call cost (USD) and where the price came from: `source` names the layer
    (`override:org`, `override`, `operator`, `agentledger`, `genai-prices`), `version` its
    version, `effective_from` the day the price took effect (None: undated), `model` the id it
    matched, `mode` the service tier or batch price applied (None: standard)."""

    usd: float
    source: str
    version: str
    model: str
    effective_from: date | None = None
    mode: str | None = None


class PriceLookup(Protocol):
    """One layer of prices, or a stack of them."""

    @property
    def version(self) -> str: ...

    def quote(
        self, model: str, provider: str | None, usage: Usage, at: datetime, mode: str | None
    ) -> Quote | None:
        """The cost of `usage` on `model` at `at`, or None when this layer has no price."""
        ...

    def entry(self, model: str, provider: str | None, at: datetime) -> dict[str, Any] | None:
        """The model's standard rates at `at` as a `prices.json` entry (so a partial override
        can be completed from whichever layer prices the model), or None."""
        ...


class BookLayer:
    """A dated price book as a layer: standard rates (a book has no service tiers), the
    long-context tier chosen by the call's input tokens."""

    def __init__(self, book: PriceBook, source: str) -> None:
        self.book = book
        self.source = source

    @property
    def version(self) -> str:
        return self.book.version

    def quote(
        self, model: str, provider: str | None, usage: Usage, at: datetime, mode: str | None
    ) -> Quote | None:
        price = self.book.lookup(model, provider, at)
        if price is None:
            return None
        usd = token_cost(price.rates_for(usage.input), usage)
        return Quote(usd, self.source, self.book.version, price.id, price.effective_from)

    def entry(self, model: str, provider: str | None, at: datetime) -> dict[str, Any] | None:
        price = self.book.lookup(model, provider, at)
        return None if price is None else entry_of(price)


class Layered:
    """Layers tried in order; the first with a price answers."""

    def __init__(self, layers: Sequence[PriceLookup]) -> None:
        self.layers = tuple(layers)

    @property
    def version(self) -> str:
        return "+".join(layer.version for layer in self.layers)

    def quote(
        self, model: str, provider: str | None, usage: Usage, at: datetime, mode: str | None
    ) -> Quote | None:
        for layer in self.layers:
            found = layer.quote(model, provider, usage, at, mode)
            if found is not None:
                return found
        return None

    def entry(self, model: str, provider: str | None, at: datetime) -> dict[str, Any] | None:
        for layer in self.layers:
            found = layer.entry(model, provider, at)
            if found is not None:
                return found
        return None


def with_overrides(
    under: PriceLookup,
    overrides: Mapping[str, Mapping[str, Any]],
    source: str,
    at: datetime,
) -> PriceLookup:
    """`under` with a layer of config overrides on top (model name → `prices.json` fields). An
    override names only what it changes: the rest comes from the layer that prices the model
    today (`at`); a model no layer knows needs `input` and `output`. ValueError when invalid."""
    if not overrides:
        return under
    models: list[ModelPrice] = []
    for name, fields in overrides.items():
        where = f"{source}.{name}"
        provider = fields.get("provider")
        found = under.entry(name, provider if isinstance(provider, str) else None, at) or {}
        base = {k: v for k, v in found.items() if k not in ("effective_from", "source")}
        # The override prices the name it is written under, whatever the base matched.
        aliases = [*base.get("aliases", []), name] if base else []
        models.append(parse_model({**base, "aliases": aliases, "id": base.get("id", name),
                                   **fields}, where))  # fmt: skip
    book = PriceBook("config", at.date().isoformat(), tuple(models))
    return Layered((BookLayer(book, source), under))


def token_cost(rates: Rates, usage: Usage) -> float:
    """USD for one call; `input` includes the cache reads and writes, `output` the reasoning."""
    uncached = max(usage.input - usage.cache_read - usage.cache_write, 0)
    visible = max(usage.output - usage.reasoning, 0)
    micro = (
        uncached * rates.input
        + usage.cache_read * rates.cache_read
        + usage.cache_write * rates.cache_write
        + visible * rates.output
        + usage.reasoning * rates.reasoning
    )
    return micro / _PER_MILLION
