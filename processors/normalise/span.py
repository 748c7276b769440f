"""Per-span normalisation: classify each span (agent | llm | tool | other), fill `SPAN_NORMALISED`.

Reads the decoded batch (attributes, events, core columns) the receivers built, following the
precedence of SEMCONV.md section 7 (tables in `semconv.py`); the batch goes on to `cost.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from collector.model import Batch, Signal
from collector.store.schema import SPAN_NORMALISED
from processors.normalise import content, semconv
from processors.normalise.classify import classify, provider
from processors.normalise.usage import provided_cost, usage

_ERROR_LEVEL_NUM = 17  # logfire: info 9, warn 13, error 17, fatal 21
_STATUS_ERROR = 2


@dataclass(frozen=True)
class NormaliseConfig:
    """`excerpt_chars` bounds the input/output text and tool arguments/results kept per span."""

    excerpt_chars: int = 2000

    def __post_init__(self) -> None:
        if self.excerpt_chars <= 0:
            raise ValueError(f"normalise.excerpt_chars: must be positive, got {self.excerpt_chars}")


def normalised_columns(n: int) -> dict[str, list[Any]]:
    """Every `SPAN_NORMALISED` column with `n` Nones: what a span says nothing about."""
    return {c.name: [None] * n for c in SPAN_NORMALISED}


class NormaliseProcessor:
    """Stateless: each span is normalised from its own attributes and events alone."""

    def __init__(self, config: NormaliseConfig) -> None:
        self._limit = config.excerpt_chars

    def process(self, batch: Batch) -> Batch:
        if batch.signal is not Signal.TRACES:
            return batch
        spans = batch.attributes
        keep = [i for i, a in enumerate(spans) if a.get("logfire.span_type") != "pending_span"]
        batch = batch.select(keep)
        n = len(batch)
        cols = normalised_columns(n)
        nones: list[Any] = [None] * n
        names = batch.columns.get("name", nones)
        status = batch.columns.get("status_code", nones)
        parents = batch.columns.get("parent_span_id", nones)
        events = batch.events or [[] for _ in range(n)]
        for i, attrs in enumerate(batch.attributes):
            span = normalise_span(
                attrs,
                events[i],
                name=names[i] or "",
                status_code=status[i],
                is_root=not parents[i],
                limit=self._limit,
            )
            for key, value in span.items():
                cols[key][i] = value
        for key, values in cols.items():
            batch.set_column(key, values)
        return batch


def normalise_span(
    a: dict[str, Any],
    events: list[dict[str, Any]],
    *,
    name: str,
    status_code: int | None,
    is_root: bool,
    limit: int,
) -> dict[str, Any]:
    """The normalised columns one span fills (absent keys stay None)."""
    op = _operation(a)
    span_type = classify(a, name, op, is_root)
    request = _first_str(a, semconv.REQUEST_MODEL)
    response = _first_str(a, semconv.RESPONSE_MODEL)
    model = _first_str(a, semconv.MODEL) or response or request
    out: dict[str, Any] = {
        "span_type": span_type,
        "operation": op,
        "run_id_external": _first_str(a, semconv.RUN_ID),
        "session_id": _session_id(a),
        "user_id": _user_id(a),
        "request_model": request,
        "response_model": response,
        "model": model,
        "provider": provider(a, model),
        "usage_is_aggregate": False,
    }
    if span_type == "agent":
        out["agent_name"] = _agent_name(a, name)
    tokens = usage(a, span_type == "agent")
    if tokens is not None:
        out.update(tokens)
        out["usage_is_aggregate"] = span_type == "agent" or op in semconv.AGGREGATE_OPERATIONS
    cost = provided_cost(a)
    if cost is not None:
        out["cost_usd"] = cost
        out["cost_source"] = "provided"
    if span_type == "tool":
        out["tool_name"] = _tool_name(a, name)
        out["tool_call_id"] = _first_str(a, semconv.TOOL_CALL_ID)
        out["tool_args"] = _first_raw(a, semconv.TOOL_ARGS, limit)
        out["tool_result"] = _first_raw(a, semconv.TOOL_RESULT, limit)
    is_error = _is_error(a, status_code)
    out["is_error"] = is_error
    out["error_type"] = _error_type(a, events, is_error)
    out["input_text"] = _input_text(a, events, limit) or out.get("tool_args")
    out["output_text"] = _output_text(a, events, limit) or out.get("tool_result")
    return out


def _operation(a: dict[str, Any]) -> str | None:
    op = a.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return op
    request_type = a.get("llm.request.type")  # Traceloop legacy
    return {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}.get(
        request_type  # type: ignore[arg-type]
    )


def _as_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _first_str(a: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = a.get(key)
        if value is not None:
            text = _as_str(value)
            if text:
                return text
    return None


def _first_raw(a: dict[str, Any], keys: tuple[str, ...], limit: int) -> str | None:
    for key in keys:
        value = a.get(key)
        if value is not None and value != "":
            if key.startswith("traceloop.entity."):
                value = _unwrap_traceloop(value)
            return content.raw(value, limit)
    return None


def _unwrap_traceloop(value: Any) -> Any:
    """Traceloop wraps a call as {"args": [...], "kwargs": {...}} and a result as JSON text:
    keep the arguments the tool was called with and the result itself."""
    if isinstance(value, str) and value[:1] in ("{", '"'):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, dict) and set(value) <= {"args", "kwargs"}:
        args, kwargs = value.get("args") or [], value.get("kwargs") or {}
        if kwargs and not args:
            return kwargs
        if args and not kwargs:
            return args[0] if len(args) == 1 else args
    return value


def _metadata_value(a: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """A key of the OpenInference `metadata` or Langfuse trace metadata (JSON string or map)."""
    for attr in ("metadata", "langfuse.trace.metadata"):
        meta = a.get(attr)
        if isinstance(meta, str) and meta.startswith("{"):
            try:
                meta = json.loads(meta)
            except ValueError:
                continue
        if isinstance(meta, dict):
            for key in keys:
                text = _as_str(meta.get(key))
                if text:
                    return text
    return None


def _session_id(a: dict[str, Any]) -> str | None:
    return (
        _first_str(a, semconv.SESSION_ID)
        or _metadata_value(a, semconv.SESSION_METADATA_KEYS)
        or _first_str(a, semconv.SESSION_ID_LATE)
    )


def _user_id(a: dict[str, Any]) -> str | None:
    return (
        _first_str(a, semconv.USER_ID)
        or _metadata_value(a, semconv.USER_METADATA_KEYS)
        or _first_str(a, semconv.USER_ID_LATE)
    )


def _agent_name(a: dict[str, Any], span_name: str) -> str | None:
    found = _first_str(a, semconv.AGENT_NAME)
    if found:
        return found
    if a.get("traceloop.span.kind") in ("workflow", "agent"):
        found = _as_str(a.get("traceloop.entity.name"))
        if found:
            return found
    found = _first_str(a, semconv.AGENT_NAME_LATE)
    if found:
        return found
    if "logfire.msg_template" in a:  # Logfire's OpenAI Agents spans carry span_data.name
        found = _as_str(a.get("name"))
        if found:
            return found
    return _strip_name(
        span_name, semconv.AGENT_NAME_STRIP_PREFIXES, semconv.AGENT_NAME_STRIP_SUFFIXES
    )


def _tool_name(a: dict[str, Any], span_name: str) -> str | None:
    found = _first_str(a, semconv.TOOL_NAME)
    if found:
        return found
    if a.get("traceloop.span.kind") == "tool":
        found = _as_str(a.get("traceloop.entity.name"))
        if found:
            return found
    if span_name.startswith("Function:"):
        found = _as_str(a.get("name"))
        if found:
            return found
    msg = a.get("logfire.msg")
    if isinstance(msg, str) and msg.startswith("running tool: "):
        return msg[len("running tool: ") :] or None
    return _strip_name(
        span_name, semconv.TOOL_NAME_STRIP_PREFIXES, semconv.TOOL_NAME_STRIP_SUFFIXES
    )


def _strip_name(name: str, prefixes: tuple[str, ...], suffixes: tuple[str, ...]) -> str | None:
    for prefix in prefixes:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    for suffix in suffixes:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = name.strip().strip("'\"[]")
    if not name or name in semconv.GENERIC_RUN_NAMES or name in ("execute_tool", "running tool"):
        return None
    return name


def _is_error(a: dict[str, Any], status_code: int | None) -> bool:
    if status_code == _STATUS_ERROR or a.get("error.type"):
        return True
    if a.get("langfuse.observation.level") == "ERROR":
        return True
    level = a.get("logfire.level_num")
    if isinstance(level, int | float) and level >= _ERROR_LEVEL_NUM:
        return True
    return (
        a.get("gen_ai.tool.status") in semconv.TOOL_FAILED_STATUS
        or a.get("gen_ai.task.status") == "failure"
    )


def _error_type(a: dict[str, Any], events: list[dict[str, Any]], is_error: bool) -> str | None:
    found = _as_str(a.get("error.type"))
    if found or not is_error:
        return found
    # An exception event counts only on a failed span: LangGraph records control-flow exceptions
    # on spans it then marks OK.
    for event in events:
        if event.get("name") == "exception":
            found = _as_str((event.get("attributes") or {}).get("exception.type"))
            if found:
                return found
    return None


def _first_text(a: dict[str, Any], keys: tuple[str, ...], limit: int) -> str | None:
    for key in keys:
        value = a.get(key)
        if value is not None:
            text = content.excerpt(value, limit)
            if text:
                return text
    return None


def _input_text(a: dict[str, Any], events: list[dict[str, Any]], limit: int) -> str | None:
    text = _first_text(a, semconv.INPUT_TEXT_EARLY, limit)
    if text:
        return text
    messages = a.get("gen_ai.input.messages")
    if messages is not None:
        parts = (a.get("gen_ai.system_instructions"), messages)
        text = "\n".join(t for p in parts if (t := content.excerpt(p, limit)))
        if text:
            return text[:limit]
    return (
        _first_text(a, ("input.value",), limit)
        or content.flattened_messages(a, "llm.input_messages", limit)
        or _first_text(a, semconv.INPUT_TEXT_VERCEL, limit)
        or content.flattened_messages(a, "gen_ai.prompt", limit)
        or _first_text(a, semconv.INPUT_TEXT_LATE, limit)
        or content.from_events(events, output=False, limit=limit)
        or _first_text(a, ("request_data",), limit)
    )


def _output_text(a: dict[str, Any], events: list[dict[str, Any]], limit: int) -> str | None:
    return (
        _first_text(a, semconv.OUTPUT_TEXT_EARLY, limit)
        or content.flattened_messages(a, "llm.output_messages", limit)
        or _first_text(a, semconv.OUTPUT_TEXT_VERCEL, limit)
        or content.flattened_messages(a, "gen_ai.completion", limit)
        or _first_text(a, semconv.OUTPUT_TEXT_LATE, limit)
        or content.from_events(events, output=True, limit=limit)
        or _first_text(a, ("response_data",), limit)
    )
