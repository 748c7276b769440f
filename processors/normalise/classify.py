"""Which kind of span this is (agent | llm | tool | other) and whose model it calls.

Pure functions over one span's attributes, called by `normalise.py`; tables come from `semconv.py`.
"""

from __future__ import annotations

from typing import Any

from processors.normalise import semconv


def classify(a: dict[str, Any], name: str, op: str | None, is_root: bool) -> str:
    """agent | llm | tool | other, by the first dialect that says (SEMCONV.md section 7)."""
    kind = semconv.LANGFUSE_TYPE.get(a.get("langfuse.observation.type"))  # type: ignore[arg-type]
    if kind:
        return kind
    oi = a.get("openinference.span.kind")
    if oi == "CHAIN":
        return "agent" if is_root else "other"
    kind = semconv.OPENINFERENCE_KIND.get(oi)  # type: ignore[arg-type]
    if kind:
        return kind
    kind = semconv.OPERATION.get(op)  # type: ignore[arg-type]
    if kind:
        return kind
    kind = semconv.TRACELOOP_KIND.get(a.get("traceloop.span.kind"))  # type: ignore[arg-type]
    if kind:
        return kind
    kind = semconv.LLM_REQUEST_TYPE.get(a.get("llm.request.type"))  # type: ignore[arg-type]
    if kind:
        return kind
    ai_op = a.get("ai.operationId")
    if isinstance(ai_op, str):
        if ai_op in semconv.VERCEL_RUN_OPS:
            return "agent"
        if ai_op.endswith(semconv.VERCEL_LLM_SUFFIXES):
            return "llm"
        if ai_op == "ai.toolCall":
            return "tool"
        if ai_op in semconv.VERCEL_OTHER_OPS:
            return "other"
    if "gen_ai.tool.name" in a or "gen_ai.tool.call.id" in a:
        return "tool"
    if name.startswith(semconv.NAME_PREFIXES):
        for prefix, kind in semconv.NAME_PREFIX_TYPE:
            if name.startswith(prefix):
                return kind
    if any(a.get(key) for key in semconv.MODEL):
        return "llm"
    return "other"


def provider(a: dict[str, Any], model: str | None) -> str | None:
    """The model vendor: a named provider unless it names a framework, else host, else model."""
    for key in semconv.PROVIDER:
        value = a.get(key)
        if isinstance(value, str) and value:
            mapped = _map_provider(value)
            if mapped:
                return mapped
    value = a.get("ai.model.provider")  # Vercel: "openai.chat", "google.vertex.chat"
    if isinstance(value, str) and value:
        parts = value.lower().split(".")
        mapped = semconv.PROVIDER_ALIASES.get(".".join(parts[:2])) or _map_provider(parts[0])
        if mapped:
            return mapped
    host = a.get("server.address")
    if isinstance(host, str):
        host = host.lower()
        for suffix, vendor in semconv.SERVER_HOST_SUFFIXES:
            if host.endswith(suffix):
                return vendor
    if model:
        lower = model.lower()
        head, slash, _ = lower.partition("/")
        if slash and head in semconv.MODEL_VENDOR_PREFIX:
            return semconv.MODEL_VENDOR_PREFIX[head]
        for prefix, vendor in semconv.MODEL_PREFIX_PROVIDER:
            if lower.startswith(prefix):
                return vendor
    return None


def _map_provider(value: str) -> str | None:
    lower = value.lower()
    if lower in semconv.FRAMEWORK_PROVIDERS:
        return None
    return semconv.PROVIDER_ALIASES.get(lower, lower)
