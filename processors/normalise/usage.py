"""Token usage and provided cost of one span, whatever dialect reported them (SEMCONV.md section 7).

Called by `normalise.py` per span. Counts come back in the store's meaning: input includes cache
reads and writes, output includes reasoning, whether the source counted them in or beside.
"""

from __future__ import annotations

import json
import math
from typing import Any

from processors.normalise import semconv

Usage = dict[str, int | None]

# A count past this is no count a model reported (2**40 is a trillion tokens): it is treated as
# unreported, so sums over a run stay far inside the store's BIGINT.
MAX_TOKENS = 2**40


def usage(a: dict[str, Any], is_run: bool) -> Usage | None:
    """input/output/cache_read/cache_write/reasoning tokens, or None when the span reports none."""
    inp = _first_int(a, semconv.INPUT_TOKENS)
    out = _first_int(a, semconv.OUTPUT_TOKENS)
    cache_read = _first_int(a, semconv.CACHE_READ_TOKENS)
    cache_write = _first_int(a, semconv.CACHE_WRITE_TOKENS)
    reasoning = _first_int(a, semconv.REASONING_TOKENS)
    if inp is None and out is None and is_run:
        inp = _first_int(a, semconv.AGGREGATED_INPUT)
        out = _first_int(a, semconv.AGGREGATED_OUTPUT)
        cache_read = _first_int(a, semconv.AGGREGATED_CACHE_READ)
        cache_write = _first_int(a, semconv.AGGREGATED_CACHE_WRITE)
        reasoning = _first_int(a, semconv.AGGREGATED_REASONING)
    if inp is None and out is None:
        return _langfuse_usage(a)
    additive = False
    if cache_read is None and cache_write is None:
        cache_read, cache_write, additive = _provider_cache(a)
    cached = (cache_read or 0) + (cache_write or 0)
    if inp is not None and cached and (additive or _counts_cache_beside(a, inp, out, cached)):
        inp += cached
    if out is not None and reasoning and reasoning > out:  # Gemini counts thoughts beside output
        out += reasoning
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": reasoning,
    }


def _counts_cache_beside(a: dict[str, Any], inp: int, out: int | None, cached: int) -> bool:
    """Whether `inp` excludes cached tokens (raw Anthropic / Bedrock usage) though the key's
    dialect says it includes them: Strands passes Bedrock's counts through unchanged."""
    if a.get("gen_ai.system") == "strands-agents" or a.get("gen_ai.provider.name") == (
        "strands-agents"
    ):
        return True
    if "gen_ai.usage.cache_write_input_tokens" in a:  # Strands' own key
        return True
    if cached > inp:  # a subset cannot exceed its total
        return True
    total = _first_int(a, semconv.TOTAL_TOKENS)
    return total is not None and out is not None and total == inp + out + cached


def _langfuse_usage(a: dict[str, Any]) -> Usage | None:
    """`langfuse.observation.usage_details`: `input` excludes cache, `output` excludes reasoning."""
    details = _json_map(a.get("langfuse.observation.usage_details"))
    if details is None:
        return None
    inp = _int(details.get("input"))
    out = _int(details.get("output"))
    cache_read = _first_int(details, semconv.LANGFUSE_CACHE_READ)
    cache_write = _int(details.get("input_cache_creation"))
    if cache_write is None:
        parts = [_int(details.get(k)) for k in semconv.LANGFUSE_CACHE_WRITE[1:]]
        cache_write = sum(p for p in parts if p is not None) if any(parts) else None
    reasoning = _first_int(details, semconv.LANGFUSE_REASONING)
    if inp is None and out is None and cache_read is None:
        return None
    return {
        "input_tokens": (inp or 0) + (cache_read or 0) + (cache_write or 0),
        "output_tokens": None if out is None else out + (reasoning or 0),
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": reasoning,
    }


def _provider_cache(a: dict[str, Any]) -> tuple[int | None, int | None, bool]:
    """Cache counts only found in provider JSON: (read, write, whether input excludes them)."""
    meta = a.get("ai.response.providerMetadata")
    if meta is not None and (not isinstance(meta, str) or "ache" in meta):  # [Cc]ache keys
        found = _json_map(meta) or {}
        anthropic = found.get("anthropic")
        if isinstance(anthropic, dict):  # AI SDK < 6 reports Anthropic's exclusive input
            return (
                _int(anthropic.get("cacheReadInputTokens")),
                _int(anthropic.get("cacheCreationInputTokens")),
                True,
            )
        bedrock = found.get("bedrock")
        if isinstance(bedrock, dict) and isinstance(bedrock.get("usage"), dict):
            use = bedrock["usage"]
            read, write = use.get("cacheReadInputTokens"), use.get("cacheWriteInputTokens")
            return _int(read), _int(write), True
        openai = found.get("openai")
        if isinstance(openai, dict):
            return _int(openai.get("cachedPromptTokens")), None, False
    response = a.get("gcp.vertex.agent.llm_response")  # ADK: prompt_token_count includes cache
    if isinstance(response, str) and "cached_content_token_count" in response:
        usage_metadata = (_json_map(response) or {}).get("usage_metadata")
        if isinstance(usage_metadata, dict):
            return _int(usage_metadata.get("cached_content_token_count")), None, False
    return None, None, False


def provided_cost(a: dict[str, Any]) -> float | None:
    """USD cost the emitter computed itself (Langfuse, OpenInference, pydantic-ai, OpenRouter)."""
    details = _json_map(a.get("langfuse.observation.cost_details"))
    if details:
        total = _float(details.get("total"))
        if total is not None:
            return total
        parts = [v for v in map(_float, details.values()) if v is not None]
        if parts:
            return sum(parts)
    for key in semconv.COST:
        value = _float(a.get(key))
        if value is not None:
            return value
    prompt, completion = _float(a.get("llm.cost.prompt")), _float(a.get("llm.cost.completion"))
    if prompt is None and completion is None:
        return None
    return (prompt or 0.0) + (completion or 0.0)


def _json_map(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str) and value.startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -MAX_TOKENS <= value <= MAX_TOKENS else None
    if isinstance(value, float) and math.isfinite(value):
        return int(value) if -MAX_TOKENS <= value <= MAX_TOKENS else None
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    if isinstance(value, str) and value.isdecimal() and len(value) <= 13:
        return int(value)
    return None


def _float(value: Any) -> float | None:
    """A finite number, or None: an infinite or NaN cost is no cost."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _first_int(a: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = a.get(key)
        if value is not None:
            found = _int(value)
            if found is not None:
                return found
    return None
