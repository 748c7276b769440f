"""A price book: USD per million tokens a model, dated, with the name matching that finds them.

Read from a `prices.json` file (the shipped corrections, the operator's book, config overrides)
into frozen objects; `collector/prices/layers.py` stacks books over genai-prices for the cost
processor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from collector.resources import shipped

# The shipped book, in the installed data package (a wheel installs it as a plain file).
SHIPPED_PATH = Path(str(shipped("prices.json")))

_RATE_KEYS = ("input", "output", "cache_read", "cache_write", "reasoning")
_MODEL_KEYS = frozenset(
    {"id", "provider", "openrouter_id", "aliases", "tiers", "effective_from", "source", "note",
     *_RATE_KEYS}
)  # fmt: skip
_BOOK_KEYS = frozenset({"version", "compiled_at", "unit", "notes", "models"})
_MEMO_LIMIT = 4096

# Path segments that name a gateway or provider, not the model (LiteLLM, Gemini API, Azure, ...).
_PATH_PREFIXES = frozenset(
    {
        "openai", "anthropic", "google", "models", "azure", "azure_ai", "openrouter", "vertex_ai",
        "vertex_ai_beta", "bedrock", "bedrock_converse", "gemini", "mistral", "mistralai", "xai",
        "x-ai", "deepseek", "cohere", "cohere_chat", "groq", "together_ai", "together",
        "fireworks_ai", "amazon",
    }
)  # fmt: skip
_OPENROUTER_VARIANTS = frozenset(
    {"free", "nitro", "online", "floor", "beta", "extended", "thinking"}
)
# Bedrock: optional region profile, vendor prefix, `-v1:0` style version suffix.
_BEDROCK = re.compile(
    r"^(?:(?:us|eu|apac|au|jp|ca|global|us-gov)\.)?"
    r"(?:anthropic|meta|amazon|mistral|cohere|deepseek|ai21|openai|qwen|writer)\."
    r"(.+?)(?:-v\d+(?::\d+)?)?(?::\d+)?$"
)
_VERTEX_DATE = re.compile(r"@(\d{8})$")
_VERTEX_TAG = re.compile(r"@[\w.-]+$")
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{2}-\d{4}|\d{2}-\d{2}|\d{4}|\d{3})$")
_TAG_SUFFIX = re.compile(r"-(?:latest|preview|exp)$")
# Providers whose models are priced as another provider's (same models, same list prices).
_PROVIDER_FAMILY = {
    "azure.ai.openai": "openai",
    "gcp.vertex_ai": "gcp.gemini",
    "gcp.gen_ai": "gcp.gemini",
}


@dataclass(frozen=True)
class Rates:
    """USD per million tokens. Cache reads/writes and reasoning have their own rate (equal to
    input/output when the vendor charges no differently)."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float


@dataclass(frozen=True)
class ModelPrice:
    """One model at one provider. `tiers` are (above this many input tokens, rates), ascending.
    `effective_from`: the first day (UTC) the price is in force; None: always (until a dated
    entry of the same model replaces it). `source`: where the price was read, for the record."""

    id: str
    provider: str | None
    rates: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()
    openrouter_id: str | None = None
    aliases: tuple[str, ...] = ()
    effective_from: date | None = None
    source: str | None = None

    def rates_for(self, input_tokens: int) -> Rates:
        """The rates of the long-context tier `input_tokens` falls in (base rates below all)."""
        chosen = self.rates
        for threshold, rates in self.tiers:
            if input_tokens > threshold:
                chosen = rates
        return chosen

    def names(self) -> Iterator[str]:
        yield self.id
        if self.openrouter_id:
            yield self.openrouter_id
        yield from self.aliases


@dataclass(frozen=True)
class PriceBook:
    version: str
    compiled_at: str
    models: tuple[ModelPrice, ...]
    _index: dict[str, tuple[ModelPrice, ...]] = field(init=False, repr=False, compare=False)
    _memo: dict[tuple[str, str | None], tuple[ModelPrice, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[str, list[ModelPrice]] = {}
        for model in self.models:
            for key in model.names():
                entries = index.setdefault(_canon(key), [])
                if model not in entries:
                    entries.append(model)
        object.__setattr__(self, "_index", {k: tuple(v) for k, v in index.items()})
        object.__setattr__(self, "_memo", {})

    def lookup(
        self, model: str, provider: str | None = None, at: datetime | None = None
    ) -> ModelPrice | None:
        """The price of `model` as a span names it (any prefix, date or alias) in force at `at`
        (default: now); when several providers sell it, the one matching `provider`, else the
        first listed (the vendor's). None when the book has no price for it at that time (a
        dated entry says nothing of the days before it)."""
        memo_key = (model, provider)
        versions = self._memo.get(memo_key)
        if versions is None:
            versions = self._find(model, provider)
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[memo_key] = versions
        return in_force(versions, at)

    def _find(self, model: str, provider: str | None) -> tuple[ModelPrice, ...]:
        """Every dated version of the first entry that matches (same id and provider)."""
        for candidate in candidate_names(model):
            entries = self._index.get(_canon(candidate))
            if not entries:
                continue
            chosen = entries[0]
            if provider:
                wanted = provider.lower()
                family = _PROVIDER_FAMILY.get(wanted, wanted)
                chosen = next((e for e in entries if e.provider in (wanted, family)), chosen)
            return tuple(e for e in entries if (e.id, e.provider) == (chosen.id, chosen.provider))
        return ()

    def with_overrides(
        self, overrides: Mapping[str, Mapping[str, Any]], label: str = "overrides"
    ) -> PriceBook:
        """A book where each override (model name → fields of a `prices.json` entry) replaces the
        fields of the model that name resolves to, or adds a model when it resolves to none. An
        override with `effective_from` adds a dated version beside the model's others."""
        if not overrides:
            return self
        models = list(self.models)
        for name, fields in overrides.items():
            where = f"{label}.{name}"
            provider = _opt_str(fields.get("provider"), f"{where}.provider")
            existing = self.lookup(name, provider, _FAR_FUTURE)
            if existing is None:
                models.append(parse_model({"id": name, **fields}, where))
                continue
            merged = parse_model({**entry_of(existing), **fields}, where)
            if "effective_from" in fields:
                models.append(merged)
            else:
                models[models.index(existing)] = merged
        return PriceBook(f"{self.version}+{label}", self.compiled_at, tuple(models))


_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def in_force(versions: tuple[ModelPrice, ...], at: datetime | None) -> ModelPrice | None:
    """Of one model's versions, the one in force at `at`: the latest dated one on or before its
    day, else the undated one; None when every version starts later."""
    if not versions:
        return None
    day = (at or datetime.now(UTC)).astimezone(UTC).date()
    best: ModelPrice | None = None
    for v in versions:
        if v.effective_from is None:
            if best is None:
                best = v
        elif v.effective_from <= day and (
            best is None or best.effective_from is None or v.effective_from > best.effective_from
        ):
            best = v
    return best


def load_price_book(path: Path | None = None) -> PriceBook:
    """Read and validate a price book file (the shipped one when `path` is None)."""
    path = path or SHIPPED_PATH
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read price book: {exc}") from exc
    return parse_price_book(data, str(path))


def parse_price_book(data: Any, where: str = "prices") -> PriceBook:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object")
    unknown = set(data) - _BOOK_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    version = _req_str(data.get("version"), f"{where}.version")
    compiled_at = _req_str(data.get("compiled_at"), f"{where}.compiled_at")
    raw_models = data.get("models")
    if not isinstance(raw_models, list):
        raise ValueError(f"{where}.models: expected a list")
    models = tuple(parse_model(m, f"{where}.models[{i}]") for i, m in enumerate(raw_models))
    return PriceBook(version, compiled_at, models)


def candidate_names(model: str) -> Iterator[str]:
    """`model` and successively more generic spellings of it, most specific first: OpenRouter
    variant, gateway prefixes, Bedrock and Vertex forms, then date and `-latest` suffixes."""
    name = model.strip().lower()
    yield name
    base, colon, variant = name.rpartition(":")
    if colon and variant in _OPENROUTER_VARIANTS:
        name = base
        yield name
    while "/" in name and name.split("/", 1)[0] in _PATH_PREFIXES:
        name = name.split("/", 1)[1]
        yield name
    if "/" in name:
        name = name.rsplit("/", 1)[1]
        yield name
    bedrock = _BEDROCK.match(name)
    if bedrock:
        name = bedrock.group(1)
        yield name
    if "@" in name:
        name = _VERTEX_TAG.sub("", _VERTEX_DATE.sub(r"-\1", name))
        yield name
    for pattern in (_DATE_SUFFIX, _TAG_SUFFIX, _DATE_SUFFIX, _TAG_SUFFIX):
        shorter = pattern.sub("", name)
        if shorter != name:
            name = shorter
            yield name


def _canon(name: str) -> str:
    # OpenRouter writes versions with dots (claude-3.5-sonnet) where vendors use dashes.
    return name.lower().replace(".", "-")


def parse_model(raw: Any, where: str) -> ModelPrice:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected an object")
    unknown = set(raw) - _MODEL_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ValueError(f"{where}.aliases: expected a list of strings")
    rates = _parse_rates(raw, where, None)
    tiers: list[tuple[int, Rates]] = []
    raw_tiers = raw.get("tiers", [])
    if not isinstance(raw_tiers, list):
        raise ValueError(f"{where}.tiers: expected a list")
    for i, tier in enumerate(raw_tiers):
        tier_where = f"{where}.tiers[{i}]"
        if not isinstance(tier, dict):
            raise ValueError(f"{tier_where}: expected an object")
        above = tier.get("above_input_tokens")
        if not isinstance(above, int) or isinstance(above, bool) or above <= 0:
            raise ValueError(f"{tier_where}.above_input_tokens: expected a positive integer")
        tiers.append((above, _parse_rates(tier, tier_where, rates)))
    tiers.sort(key=lambda t: t[0])
    effective = raw.get("effective_from")
    try:
        since = None if effective is None else date.fromisoformat(effective)
    except (TypeError, ValueError):
        raise ValueError(f"{where}.effective_from: expected a date YYYY-MM-DD") from None
    return ModelPrice(
        id=_req_str(raw.get("id"), f"{where}.id"),
        provider=_opt_str(raw.get("provider"), f"{where}.provider"),
        rates=rates,
        tiers=tuple(tiers),
        openrouter_id=_opt_str(raw.get("openrouter_id"), f"{where}.openrouter_id"),
        aliases=tuple(aliases),
        effective_from=since,
        source=_opt_str(raw.get("source"), f"{where}.source"),
    )


def _parse_rates(raw: dict[str, Any], where: str, base: Rates | None) -> Rates:
    def rate(key: str, default: float | None) -> float:
        value = raw.get(key)
        if value is None:
            if default is None:
                raise ValueError(f"{where}.{key}: required")
            return default
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{where}.{key}: expected a non-negative number, got {value!r}")
        return float(value)

    inp = rate("input", None)
    out = rate("output", None)
    if base is not None:  # a tier: unlisted cache/reasoning rates scale with the tier's input
        scale_in = inp / base.input if base.input else 1.0
        scale_out = out / base.output if base.output else 1.0
        return Rates(
            inp,
            out,
            rate("cache_read", base.cache_read * scale_in),
            rate("cache_write", base.cache_write * scale_in),
            rate("reasoning", base.reasoning * scale_out),
        )
    return Rates(
        inp, out, rate("cache_read", inp), rate("cache_write", inp), rate("reasoning", out)
    )


def entry_of(model: ModelPrice) -> dict[str, Any]:
    """`model` as a `prices.json` entry, so overrides merge field by field."""
    r = model.rates
    return {
        "id": model.id,
        "provider": model.provider,
        "openrouter_id": model.openrouter_id,
        "aliases": list(model.aliases),
        "effective_from": model.effective_from.isoformat() if model.effective_from else None,
        "source": model.source,
        "input": r.input,
        "output": r.output,
        "cache_read": r.cache_read,
        "cache_write": r.cache_write,
        "reasoning": r.reasoning,
        "tiers": [
            {"above_input_tokens": above, **{k: getattr(t, k) for k in _RATE_KEYS}}
            for above, t in model.tiers
        ],
    }


def _req_str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: expected a non-empty string")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    if value is None:
        return None
    return _req_str(value, where)
