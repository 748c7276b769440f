"""Turns published price lists (OpenRouter's models API, LiteLLM's price map) into price book
entries merged over the operator's book; pure: `agentledger prices update` and the price feed
(`feed.py`) do the I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from collector.prices.book import ModelPrice, PriceBook, parse_price_book

_RATE_KEYS = ("input", "output", "cache_read", "cache_write", "reasoning")
_MILLION = Decimal(1_000_000)

# Source vendor / provider names → the provider names the book uses (as spans report them).
# Hosts we do not price (azure, vertex variants, openrouter routes, ...) are skipped.
_OPENROUTER_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gcp.gemini",
    "mistralai": "mistral_ai",
    "x-ai": "x_ai",
    "cohere": "cohere",
    "deepseek": "deepseek",
}
_LITELLM_PROVIDERS = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "together_ai": "together_ai",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
}
_OPENROUTER_RATES = {
    "prompt": "input",
    "completion": "output",
    "input_cache_read": "cache_read",
    "input_cache_write": "cache_write",
    "internal_reasoning": "reasoning",
}
_LITELLM_RATES = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write",
    "output_cost_per_reasoning_token": "reasoning",
}
_LITELLM_MODES = frozenset({"chat", "completion", "responses"})
_LITELLM_TIER = re.compile(r"^(?P<base>.+)_above_(?P<k>\d+)k_tokens$")


@dataclass(frozen=True)
class Converted:
    """Book entries (`prices.json` model objects), and `name: reason` for each one left out."""

    entries: tuple[dict[str, Any], ...]
    skipped: tuple[str, ...]


@dataclass(frozen=True)
class Merged:
    book: dict[str, Any]
    updated: int
    added: int


def detect_format(data: Any) -> str:
    """`"openrouter"` or `"litellm"`, from the document's shape; ValueError for anything else."""
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return "openrouter"
    if isinstance(data, dict) and any(
        isinstance(v, dict) and ("litellm_provider" in v or "input_cost_per_token" in v)
        for v in data.values()
    ):
        return "litellm"
    if isinstance(data, list):
        raise ValueError(
            "a genai-prices data file is not merged into a book: set it as prices.url, where it "
            "replaces the bundled genai-prices data"
        )
    raise ValueError(
        'not a price list: expected OpenRouter\'s /api/v1/models JSON ({"data": [...]}) '
        "or LiteLLM's model_prices_and_context_window.json"
    )


def convert(data: Any) -> Converted:
    return from_openrouter(data) if detect_format(data) == "openrouter" else from_litellm(data)


def from_openrouter(data: Any) -> Converted:
    """Entries from OpenRouter's models list: USD per token as decimal strings. Variants
    (`:free`, `:nitro`) are left out so they never reprice the base model."""
    entries: list[dict[str, Any]] = []
    skipped: list[str] = []
    for i, raw in enumerate(data.get("data", []) if isinstance(data, dict) else []):
        name = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(name, str) or "/" not in name:
            skipped.append(f"data[{i}]: no vendor/model id")
            continue
        if ":" in name:
            skipped.append(f"{name}: variant")
            continue
        vendor, model = name.split("/", 1)
        provider = _OPENROUTER_PROVIDERS.get(vendor)
        if provider is None:
            skipped.append(f"{name}: vendor {vendor!r} not priced by the book")
            continue
        pricing = raw.get("pricing")
        try:
            rates = _rates(pricing if isinstance(pricing, dict) else {}, _OPENROUTER_RATES)
        except ValueError as exc:
            skipped.append(f"{name}: {exc}")
            continue
        if rates.get("reasoning") == 0.0:  # OpenRouter lists 0 where reasoning bills as output
            del rates["reasoning"]
        entries.append({"id": model, "provider": provider, "openrouter_id": name, **rates})
    return Converted(tuple(entries), tuple(skipped))


def from_litellm(data: Any) -> Converted:
    """Entries from LiteLLM's price map: USD per token as numbers; `*_above_Nk_tokens` prices
    become a tier above N*1000 input tokens. Non-chat modes and region routes are left out."""
    entries: list[dict[str, Any]] = []
    skipped: list[str] = []
    for key, raw in data.items() if isinstance(data, dict) else []:
        if key == "sample_spec":
            continue
        if not isinstance(raw, dict):
            skipped.append(f"{key}: not an object")
            continue
        if raw.get("mode", "chat") not in _LITELLM_MODES:
            skipped.append(f"{key}: mode {raw.get('mode')!r}")
            continue
        source = raw.get("litellm_provider")
        provider = _LITELLM_PROVIDERS.get(source) if isinstance(source, str) else None
        if provider is None:
            skipped.append(f"{key}: provider {source!r} not priced by the book")
            continue
        model = key.removeprefix(f"{source}/")
        if "/" in model:
            skipped.append(f"{key}: route or region specific")
            continue
        try:
            entry = {"id": model, "provider": provider, **_rates(raw, _LITELLM_RATES)}
            tiers = _litellm_tiers(raw, entry)
        except ValueError as exc:
            skipped.append(f"{key}: {exc}")
            continue
        if tiers:
            entry["tiers"] = tiers
        entries.append(entry)
    return Converted(tuple(entries), tuple(skipped))


def merge(book: dict[str, Any], entries: tuple[dict[str, Any], ...], today: date) -> Merged:
    """`book` with each entry's rates over the model carrying that exact name at that provider:
    when they differ from the version in force, a new version dated `today` is added (names and
    unlisted fields kept) and the old one stays, so calls before today keep their price; other
    entries are appended undated, versions bumped. ValueError when the result is not valid."""
    current = parse_price_book(book, "current book")
    models: list[dict[str, Any]] = [dict(m) for m in book["models"]]
    position = {id(m): i for i, m in enumerate(current.models)}
    new_at: dict[tuple[str, str], int] = {}  # a name the source lists twice updates its first
    updated = added = 0
    for entry in entries:
        at = _existing(current, entry, today)
        where = position[id(at)] if at else new_at.get((_canon(entry["id"]), entry["provider"]))
        if where is None:
            new_at[(_canon(entry["id"]), entry["provider"])] = len(models)
            models.append(dict(entry))
            added += 1
            continue
        target = models[where]
        change = {k: entry[k] for k in (*_RATE_KEYS, "tiers") if k in entry}
        if not target.get("openrouter_id") and entry.get("openrouter_id"):
            target["openrouter_id"] = entry["openrouter_id"]
        if all(target.get(k) == v for k, v in change.items()):
            continue
        if at is None or target.get("effective_from") == today.isoformat():
            target.update(change)  # an entry new today, or a second update today
        else:
            models.append({**target, **change, "effective_from": today.isoformat()})
        updated += at is not None
    result = {
        **book,
        "version": _next_version(str(book.get("version", "")), today),
        "compiled_at": today.isoformat(),
        "models": models,
    }
    parse_price_book(result, "merged book")
    return Merged(result, updated, added)


def _existing(book: PriceBook, entry: dict[str, Any], today: date) -> ModelPrice | None:
    """The version in force today of the model `entry` names exactly."""
    when = datetime.combine(today, time(), UTC)
    for name in filter(None, (entry["id"], entry.get("openrouter_id"))):
        hit = book.lookup(name, entry["provider"], when)
        # lookup also strips dates and prefixes; only an exact name may reprice a model.
        if hit and hit.provider == entry["provider"] and _canon(name) in map(_canon, hit.names()):
            return hit
    return None


def dumps_book(book: dict[str, Any]) -> str:
    """The layout of the shipped file: header fields indented, one model per line."""
    head = json.dumps({k: v for k, v in book.items() if k != "models"}, indent=2)
    lines = ",\n".join(f"    {json.dumps(m)}" for m in book["models"])
    return f'{head[:-2]},\n  "models": [\n{lines}\n  ]\n}}\n'


def _rates(raw: dict[str, Any], fields: dict[str, str]) -> dict[str, float]:
    rates: dict[str, float] = {}
    for source, ours in fields.items():
        if raw.get(source) is not None:
            rates[ours] = _per_million(raw[source], source)
    if "input" not in rates or "output" not in rates:
        raise ValueError("no input/output token price")
    return rates


def _litellm_tiers(raw: dict[str, Any], base: dict[str, Any]) -> list[dict[str, Any]]:
    by_threshold: dict[int, dict[str, Any]] = {}
    for key, value in raw.items():
        match = _LITELLM_TIER.match(key)
        if match and match["base"] in _LITELLM_RATES and value is not None:
            tier = by_threshold.setdefault(int(match["k"]) * 1000, {})
            tier[_LITELLM_RATES[match["base"]]] = _per_million(value, key)
    return [
        {"above_input_tokens": above, "input": base["input"], "output": base["output"], **tier}
        for above, tier in sorted(by_threshold.items())
    ]


def _per_million(value: Any, where: str) -> float:
    # Through Decimal so 0.000003/token becomes 3.0, not 2.9999999999999996.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{where}: expected a price, got {value!r}")
    try:
        per_million = Decimal(str(value)) * _MILLION
    except InvalidOperation:
        raise ValueError(f"{where}: expected a price, got {value!r}") from None
    if not per_million.is_finite() or per_million < 0:
        raise ValueError(f"{where}: expected a non-negative price, got {value!r}")
    return float(per_million)


def _next_version(previous: str, today: date) -> str:
    stem, _, serial = previous.rpartition(".")
    if stem == today.isoformat() and serial.isdigit():
        return f"{stem}.{int(serial) + 1}"
    return f"{today.isoformat()}.1"


def _canon(name: str) -> str:
    # As pricebook's index spells names: OpenRouter's dots match vendors' dashes.
    return name.lower().replace(".", "-")
