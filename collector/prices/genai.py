"""The maintained price source under our books: pydantic's `genai-prices` package (data bundled).

Builds its own snapshot of the package's data (or of a genai-prices `data.json` the operator
points `prices.url` at), never the package's global one, and never starts its background
updater: pricing makes no network call. Hands `pricing.py` a layer that prices a call as of
its start time, with the service tier or batch price when the span names one.
"""

from __future__ import annotations

import warnings
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import genai_prices
from genai_prices import data_snapshot
from genai_prices import types as gp

from collector.prices.book import candidate_names
from collector.prices.pricing import Quote, Usage

SOURCE = "genai-prices"
_MEMO_LIMIT = 4096

# Span providers (OTel `gen_ai.provider.name` values, as normalise leaves them) → genai-prices
# provider ids. Azure OpenAI and Vertex sell the vendors' models at the vendors' list prices.
PROVIDERS = {
    "openai": "openai",
    "azure.ai.openai": "azure",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "gcp.vertex_ai": "google",
    "aws.bedrock": "aws",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "deepseek": "deepseek",
    "cohere": "cohere",
    "groq": "groq",
    "together_ai": "together",
    "openrouter": "openrouter",
    "perplexity": "perplexity",
    "fireworks": "fireworks",
    "cerebras": "cerebras",
}
# Modes a span may name (service tier or batch) → genai-prices price-variant context.
_STANDARD = frozenset({"default", "auto", "standard", "on_demand"})


def bundled_version() -> str:
    """The version calls priced with the data bundled in the installed package record."""
    return f"{SOURCE} {genai_prices.__version__}"


class GenaiLayer:
    """A `PriceLookup` over genai-prices providers (the bundled ones by default)."""

    def __init__(
        self, providers: list[gp.Provider] | None = None, version: str | None = None
    ) -> None:
        if providers is None:
            from genai_prices.data import providers as bundled

            providers = bundled
        self._snapshot = data_snapshot.DataSnapshot(providers=providers, from_auto_update=False)
        self._version = version or bundled_version()
        self._memo: dict[tuple[str, str | None], tuple[gp.Provider, gp.ModelInfo] | None] = {}

    @property
    def version(self) -> str:
        return self._version

    def find(self, model: str, provider: str | None) -> tuple[gp.Provider, gp.ModelInfo] | None:
        """The genai-prices model a span's model name means: each more generic spelling of the
        name (gateway prefix, Bedrock/Vertex form, date suffix stripped) is tried with the
        span's provider first, then with the provider genai-prices guesses from the name."""
        key = (model, provider)
        if key in self._memo:
            return self._memo[key]
        found = None
        wanted = PROVIDERS.get((provider or "").lower())
        for candidate in candidate_names(model):
            for provider_id in dict.fromkeys((wanted, None)):
                try:
                    found = self._snapshot.find_provider_model(candidate, None, provider_id, None)
                except LookupError:
                    continue
                break
            if found is not None:
                break
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = found
        return found

    def quote(
        self, model: str, provider: str | None, usage: Usage, at: datetime, mode: str | None
    ) -> Quote | None:
        found = self.find(model, provider)
        if found is None:
            return None
        prov, info = found
        context = _context(mode)
        total = None
        if context is None:
            total = _plain_total(info.get_prices(at), usage)
        if total is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a price key this version does not know
                    calc = info.calc_price(
                        _usage(usage), prov, genai_request_timestamp=at, price_context=context
                    )
            except ValueError:  # usage the data cannot split (e.g. more cache reads than input)
                return None
            total = calc.total_price
        applied = mode if context and _has_variant(info, context, at) else None
        return Quote(float(total), SOURCE, self._version, info.id, _since(info, at), applied)

    def entry(self, model: str, provider: str | None, at: datetime) -> dict[str, Any] | None:
        found = self.find(model, provider)
        if found is None:
            return None
        prices = found[1].get_prices(at)
        rates = {
            ours: _base(getattr(prices, key, None))
            for ours, key in (
                ("input", "input_mtok"),
                ("output", "output_mtok"),
                ("cache_read", "cache_read_mtok"),
                ("cache_write", "cache_write_mtok"),
            )
        }
        if rates["input"] is None or rates["output"] is None:
            return None
        return {"id": found[1].id, **{k: v for k, v in rates.items() if v is not None}}


# Text-token calls (the common case) are priced here directly: genai-prices' own calculation
# runs its unit registry, usage decomposition and validation for every call, ~50 times the
# cost. The keys of text tokens, cached or not; and the keys of counts a span never reports
# here (searches, 1-hour cache writes, audio, images, documents, video), which price nothing
# for a call without them. A price with any other key (per request, reasoning apart,
# characters...), a call with audio or image tokens, or usage that does not split goes through
# genai-prices. tests/collector/prices/test_genai.py checks both agree on every bundled price.
_TEXT_KEYS = frozenset({"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"})
_UNREPORTED_KEYS = frozenset(
    {
        "web_searches_kcount", "storage_searches_kcount", "cache_write_1h_mtok",
        "input_audio_mtok", "output_audio_mtok", "cache_audio_read_mtok", "audio_hours",
        "input_audio_hours", "input_image_mtok", "output_image_mtok", "cache_image_read_mtok",
        "input_document_kpages", "input_annotated_document_kpages", "input_video_mtok",
        "output_video_mtok",
    }
)  # fmt: skip
_PER_MILLION = Decimal(1_000_000)


def _plain_total(price: gp.ModelPrice, u: Usage) -> Decimal | None:
    """What genai-prices' calculation gives for a text-token call under `price`: each token
    count at its rate (cache reads and writes out of the input they are part of, when priced
    apart), a tiered rate chosen by the input tokens; None when this is not such a case."""
    if u.input_audio or u.output_audio or u.input_image or u.output_image:
        return None
    rates = {k: v for k, v in vars(price).items() if v is not None and not k.startswith("_")}
    if not rates.keys() <= _TEXT_KEYS | _UNREPORTED_KEYS:
        return None
    read = u.cache_read if "cache_read_mtok" in rates else 0
    write = u.cache_write if "cache_write_mtok" in rates else 0
    if u.cache_read + u.cache_write > u.input or u.reasoning > u.output:
        return None
    counts = {
        "input_mtok": u.input - read - write,
        "output_mtok": u.output,
        "cache_read_mtok": read,
        "cache_write_mtok": write,
    }
    total = Decimal(0)
    for key, price_of in rates.items():
        if key not in _TEXT_KEYS:
            continue
        rate = price_of
        if isinstance(price_of, gp.TieredPrices):  # the whole call at the tier it reaches
            tiers = reversed(price_of.tiers)
            rate = next((t.price for t in tiers if u.input > t.start), price_of.base)
        total += rate * counts[key] / _PER_MILLION
    return total


def _usage(u: Usage) -> genai_prices.Usage:
    values = {
        "input_tokens": u.input,
        "output_tokens": u.output,
        "cache_read_tokens": u.cache_read,
        "cache_write_tokens": u.cache_write,
        "output_reasoning_tokens": u.reasoning,
        "input_audio_tokens": u.input_audio,
        "output_audio_tokens": u.output_audio,
        "input_image_tokens": u.input_image,
        "output_image_tokens": u.output_image,
    }
    return genai_prices.Usage(**{k: v for k, v in values.items() if v})


def _context(mode: str | None) -> dict[str, str] | None:
    if not mode or mode in _STANDARD:
        return None
    if mode == "batch":
        return {"processing": "batch"}
    return {"service_tier": mode}


def _has_variant(info: gp.ModelInfo, context: dict[str, str], at: datetime) -> bool:
    """Whether the model has a price for this tier (else the standard price was used)."""
    return any(
        all(context.get(k) == v for k, v in variant.when.items())
        and (variant.constraint is None or variant.constraint.active(at))
        and any(p is not None for p in variant.prices.__dict__.values())
        for variant in info.price_variants or ()
    )


def _since(info: gp.ModelInfo, at: datetime) -> date | None:
    """The start date of the dated price in force at `at` (None: undated or time-of-day)."""
    if not isinstance(info.prices, list):
        return None
    for conditional in reversed(info.prices):
        constraint = conditional.constraint
        if constraint is None or constraint.active(at):
            return constraint.start_date if isinstance(constraint, gp.StartDateConstraint) else None
    return None


def _base(value: Decimal | gp.TieredPrices | None) -> float | None:
    if value is None:
        return None
    return float(value.base if isinstance(value, gp.TieredPrices) else value)


def providers_from_json(raw: Any) -> list[gp.Provider]:
    """Providers from a genai-prices `data.json` (a list of providers); ValueError if not one."""
    if not isinstance(raw, list) or not raw or not all(isinstance(p, dict) for p in raw):
        raise ValueError("not a genai-prices data file: expected a list of providers")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return gp._providers_from_raw(raw)  # the package's own loader of its data file
    except Exception as exc:  # pydantic's ValidationError
        raise ValueError(f"not a valid genai-prices data file: {exc}") from None
