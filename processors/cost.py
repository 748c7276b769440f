"""Prices LLM calls and paid tool calls that did not report a cost, with the lookup handed in.

Runs after `normalise` on the same batch: reads its model, token, tool and start-time columns
(and the service tier and audio/image token attributes), fills `cost_usd`, `cost_source` and
where each price came from (`price_source`, `price_book_version`, `price_effective_from`,
`price_mode`); the batch then goes to the store. LLM prices come from the layered lookup of
`collector/prices/` (config overrides on top); tool prices from this processor's config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector.model import Batch, Signal
from collector.prices.pricing import PriceLookup, Quote, Usage, with_overrides

# Where a span says which service tier served it: the response's answer first (a request for
# "auto" is answered "default" or "flex"), then what was asked for. "batch" means batch prices.
SERVICE_TIER = (
    "openai.response.service_tier",
    "gen_ai.openai.response.service_tier",
    "gen_ai.response.service_tier",
    "openai.request.service_tier",
    "gen_ai.openai.request.service_tier",
    "gen_ai.request.service_tier",
)
# Audio and image token counts, when a span carries them (parts of input/output tokens).
MODALITY_TOKENS = {
    "input_audio": ("gen_ai.usage.input_audio_tokens", "llm.token_count.prompt_details.audio"),
    "output_audio": (
        "gen_ai.usage.output_audio_tokens",
        "llm.token_count.completion_details.audio",
    ),
    "input_image": ("gen_ai.usage.input_image_tokens", "llm.token_count.prompt_details.image"),
    "output_image": (
        "gen_ai.usage.output_image_tokens",
        "llm.token_count.completion_details.image",
    ),
}
_MODALITY_NAMES = frozenset(n for names in MODALITY_TOKENS.values() for n in names)
TOOL_SOURCE = "tool-config"
_TOKEN_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


@dataclass(frozen=True)
class ToolPrice:
    """USD for one call of a tool (`per_call`), or per unit of a number the tool span carries
    in `unit_attribute` (search results, pages, seconds): `per_unit` times that number."""

    per_call: float | None = None
    per_unit: float | None = None
    unit_attribute: str | None = None

    def validate(self) -> list[str]:
        problems = []
        if (self.per_call is None) == (self.per_unit is None):
            problems.append("set exactly one of per_call or per_unit")
        if self.per_unit is not None and not self.unit_attribute:
            problems.append("per_unit needs unit_attribute (the span attribute to count)")
        if self.per_call is not None and self.unit_attribute:
            problems.append("unit_attribute goes with per_unit, not per_call")
        for name in ("per_call", "per_unit"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                problems.append(f"{name} must be a non-negative number of USD")
        return problems

    def cost(self, attributes: dict[str, Any]) -> float | None:
        if self.per_call is not None:
            return self.per_call
        units = _number(attributes.get(self.unit_attribute or ""))
        return None if units is None or self.per_unit is None else self.per_unit * units


@dataclass(frozen=True)
class OrgCost:
    """One org's own prices: `models` (model name → `prices.json` fields) and `tools`."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    tools: dict[str, ToolPrice] = field(default_factory=dict)


@dataclass(frozen=True)
class CostConfig:
    """`overrides`: model name → `prices.json` entry fields (e.g. a negotiated rate), over every
    other price for every org; `tools`: tool name (`gen_ai.tool.name`) → its price; `orgs`: org
    name → that org's own `models` and `tools`, over the global ones."""

    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    tools: dict[str, ToolPrice] = field(default_factory=dict)
    orgs: dict[str, OrgCost] = field(default_factory=dict)


@dataclass(frozen=True)
class _Prices:
    models: PriceLookup
    tools: dict[str, tuple[ToolPrice, str]]


class CostProcessor:
    """Raises ValueError at construction when an override is not a valid price entry."""

    def __init__(
        self, config: CostConfig, pricing: PriceLookup, now: datetime | None = None
    ) -> None:
        # Partial overrides are completed from today's prices of the layers beneath.
        today = now or datetime.now(UTC)
        models = with_overrides(pricing, config.overrides, "override", today)
        tools = {name: (price, TOOL_SOURCE) for name, price in config.tools.items()}
        self._prices = _Prices(models, tools)
        self._orgs = {
            org: _Prices(
                with_overrides(models, own.models, "override:org", today),
                {**tools, **{n: (p, f"{TOOL_SOURCE}:org") for n, p in own.tools.items()}},
            )
            for org, own in config.orgs.items()
        }

    def pricing_for(self, org: str) -> PriceLookup:
        return self._orgs.get(org, self._prices).models

    def process(self, batch: Batch) -> Batch:
        if batch.signal is not Signal.TRACES:
            return batch
        n = len(batch)
        nones: list[Any] = [None] * n
        col = batch.columns.get
        attrs = batch.attributes or [{} for _ in range(n)]
        span_types = col("span_type", nones)
        aggregate = col("usage_is_aggregate", nones)
        starts = col("start_time_unix_nano", nones)
        out = {
            name: list(col(name, nones))
            for name in (
                "cost_usd",
                "cost_source",
                "price_book_version",
                "price_source",
                "price_effective_from",
                "price_mode",
            )
        }
        models, requests = col("model", nones), col("request_model", nones)
        providers, tool_names = col("provider", nones), col("tool_name", nones)
        tokens = [col(name, nones) for name in _TOKEN_COLUMNS]
        prices = self._orgs.get(batch.org, self._prices)
        for i in range(n):
            if out["cost_source"][i] == "provided":
                continue
            if span_types[i] == "tool" and tool_names[i] in prices.tools:
                tool, source = prices.tools[tool_names[i]]
                usd = tool.cost(attrs[i])
                _fill(out, i, usd, source=source, version="config")
                continue
            if span_types[i] != "llm" or aggregate[i]:
                continue
            inp, outp, read, write, reasoning = (t[i] for t in tokens)
            if inp is None and outp is None:
                _fill(out, i, None, source=None, version=prices.models.version)
                continue
            modal = {}
            if not _MODALITY_NAMES.isdisjoint(attrs[i]):  # most spans carry none
                modal = {k: _tokens(attrs[i], names) for k, names in MODALITY_TOKENS.items()}
            usage = Usage(inp or 0, outp or 0, read or 0, write or 0, reasoning or 0, **modal)
            at = _when(starts[i])
            mode = _mode(attrs[i])
            quote = None
            if models[i]:
                quote = prices.models.quote(models[i], providers[i], usage, at, mode)
            if quote is None and requests[i] and requests[i] != models[i]:
                quote = prices.models.quote(requests[i], providers[i], usage, at, mode)
            if quote is None:
                _fill(out, i, None, source=None, version=prices.models.version)
            else:
                _fill(out, i, quote.usd, source=quote.source, version=quote.version, quote=quote)
        for name, values in out.items():
            batch.set_column(name, values)
        return batch


def _fill(
    out: dict[str, list[Any]],
    i: int,
    usd: float | None,
    *,
    source: str | None,
    version: str,
    quote: Quote | None = None,
) -> None:
    """One span's cost columns: unknown is None with `cost_source` "none", never 0."""
    out["cost_usd"][i] = usd
    out["cost_source"][i] = "none" if usd is None else "computed"
    out["price_source"][i] = source if usd is not None else None
    out["price_book_version"][i] = version
    since = quote.effective_from if quote else None
    out["price_effective_from"][i] = since.isoformat() if since else None
    out["price_mode"][i] = quote.mode if quote else None


def _when(start_ns: Any) -> datetime:
    """The call's start: the price in force then applies (now when a span has no start)."""
    if isinstance(start_ns, int) and start_ns > 0:
        return datetime.fromtimestamp(start_ns / 1e9, UTC)
    return datetime.now(UTC)


def _mode(attributes: dict[str, Any]) -> str | None:
    for key in SERVICE_TIER:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value.strip().lower()
    return None


def _tokens(attributes: dict[str, Any], names: tuple[str, ...]) -> int:
    for name in names:
        value = _number(attributes.get(name))
        if value is not None:
            return int(value)
    return 0


def _number(value: Any) -> float | None:
    """A non-negative finite count from an attribute (a number, a numeric string, or a list,
    which counts its items: e.g. the results a search returned)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, list | tuple):
        return float(len(value))
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return float(value)
    return None
