"""Message content in any dialect (JSON strings, structured values, flattened keys, span events)
turned into a short plain-text excerpt; `normalise.py` calls it for input/output text.
"""

from __future__ import annotations

import json
from typing import Any

from processors.normalise import semconv

_MAX_DEPTH = 8
# Keys that hold text, in the order they are read, across OTel parts, OpenAI/Anthropic messages,
# Vercel prompts, ADK (`contents`/`parts`), Strands content blocks and CrewAI outputs (`raw`).
_TEXT_KEYS = (
    "raw",
    "content",
    "text",
    "parts",
    "contents",
    "messages",
    "system",
    "prompt",
    "result",
    "response",
    "message",
    "tool_calls",
    "choices",
    "input",
    "output",
)


def excerpt(value: Any, limit: int) -> str | None:
    """Readable text of `value`, at most `limit` characters; None when there is none."""
    if value is None:
        return None
    if isinstance(value, str):
        stripped = value.lstrip()
        if stripped[:1] in ("[", "{"):
            try:
                value = json.loads(value)
            except ValueError:
                return value[:limit] or None
        else:
            return value[:limit] or None
    out: list[str] = []
    _collect(value, out, limit, 0)
    text = "\n".join(out)[:limit]
    return text or None


def raw(value: Any, limit: int) -> str | None:
    """`value` as a string (compact JSON for structured values), at most `limit` characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value, separators=(",", ":"), default=str)
    return value[:limit] or None


def _collect(value: Any, out: list[str], limit: int, depth: int) -> int:
    """Append text pieces of `value` to `out`; returns the characters collected so far."""
    used = sum(len(s) for s in out)
    if used >= limit or depth > _MAX_DEPTH:
        return used
    if isinstance(value, str):
        if value:
            out.append(value)
        return used + len(value)
    if isinstance(value, list):
        for item in value:
            used = _collect(item, out, limit, depth + 1)
            if used >= limit:
                break
        return used
    if not isinstance(value, dict):
        if value is not None:
            out.append(str(value))
        return used
    kind = value.get("type")
    if kind in ("tool_call", "tool-call", "function_call", "tool_use"):
        args = value.get("arguments", value.get("args", value.get("input")))
        out.append(f"{value.get('name') or value.get('toolName')}({raw(args, limit) or ''})")
        return used + len(out[-1])
    fn = value.get("function")
    if kind == "function" and isinstance(fn, dict) and "arguments" in fn:  # OpenAI chat tool call
        out.append(f"{fn.get('name')}({raw(fn['arguments'], limit) or ''})")
        return used + len(out[-1])
    role = value.get("role")
    before = len(out)
    for key in _TEXT_KEYS:
        if key in value:
            used = _collect(value[key], out, limit, depth + 1)
    if role and len(out) > before:
        out[before] = f"{role}: {out[before]}"
    return used


def flattened_messages(attrs: dict[str, Any], prefix: str, limit: int) -> str | None:
    """Text of OpenLLMetry `prefix.N.{role,content}` and OpenInference
    `prefix.N.message.{role,content,contents.M.message_content.text}` flattened lists."""
    if not any(key in attrs for key in semconv.FLAT_PROBES[prefix]):
        return None
    out: list[str] = []
    used = 0
    for i in range(1000):
        base = f"{prefix}.{i}"
        role = attrs.get(f"{base}.role")
        content = attrs.get(f"{base}.content")
        if role is None and content is None:
            role = attrs.get(f"{base}.message.role")
            content = attrs.get(f"{base}.message.content")
            if content is None:
                content = _flattened_contents(attrs, f"{base}.message")
            if role is None and content is None:
                break
        if content is None:
            continue
        piece = excerpt(content, limit - used) or ""
        if piece:
            out.append(f"{role}: {piece}" if role else piece)
            used += len(out[-1])
        if used >= limit:
            break
    return "\n".join(out)[:limit] or None


def _flattened_contents(attrs: dict[str, Any], base: str) -> str | None:
    texts: list[str] = []
    for j in range(1000):
        key = f"{base}.contents.{j}.message_content"
        text = attrs.get(f"{key}.text")
        if text is None and f"{key}.type" not in attrs:
            break
        if isinstance(text, str):
            texts.append(text)
    for k in range(1000):
        name = attrs.get(f"{base}.tool_calls.{k}.tool_call.function.name")
        if name is None:
            break
        args = attrs.get(f"{base}.tool_calls.{k}.tool_call.function.arguments", "")
        texts.append(f"{name}({args})")
    return "\n".join(texts) or None


def from_events(events: list[dict[str, Any]], output: bool, limit: int) -> str | None:
    """Text of content events: OTel `...operation.details` first, then the per-message events."""
    details_key = "gen_ai.output.messages" if output else "gen_ai.input.messages"
    legacy = semconv.OUTPUT_EVENTS if output else semconv.INPUT_EVENTS
    pieces: list[str] = []
    for event in events:
        name = event.get("name")
        attrs = event.get("attributes") or {}
        if name == semconv.DETAILS_EVENT:
            parts = [attrs.get(details_key)]
            if not output:
                parts.insert(0, attrs.get("gen_ai.system_instructions"))
            joined = "\n".join(t for p in parts if (t := excerpt(p, limit)))
            if joined:
                return joined[:limit]
        elif name in legacy:
            for key in semconv.EVENT_CONTENT_KEYS:
                text = excerpt(attrs.get(key), limit)
                if text:
                    role = attrs.get("role") or _event_role(name)
                    pieces.append(f"{role}: {text}" if role else text)
                    break
    return "\n".join(pieces)[:limit] or None


def _event_role(name: str) -> str | None:
    """`gen_ai.user.message` → `user`; the choice and content events carry no role."""
    if name.startswith("gen_ai.") and name.endswith(".message"):
        return name[len("gen_ai.") : -len(".message")]
    return None
