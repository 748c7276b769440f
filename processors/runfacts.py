"""Facts about one run read off its spans: whether a span says it timed out, the first value of
a field, and the run's workflow name. Pure; used by `runs.py`.
"""

from __future__ import annotations

from collections.abc import Iterable

from processors.normalise.semconv import GENERIC_RUN_NAMES
from processors.runs.tree import SpanFacts

STATUS_OK, STATUS_ERROR = 1, 2  # OTLP status codes
TIMEOUT_WORDS = ("timeout", "timed out", "deadline exceeded", "deadline_exceeded")


def says_timeout(s: SpanFacts) -> bool:
    text = (s.error_type or "").lower()
    if s.status_code == STATUS_ERROR or s.is_error:
        text += " " + (s.status_message or "").lower()
    return any(word in text for word in TIMEOUT_WORDS)


def first_value(spans: Iterable[SpanFacts], field: str) -> str | None:
    for s in spans:
        value = getattr(s, field)
        if value:
            return str(value)
    return None


def workflow_name(run_span: SpanFacts | None, members: list[SpanFacts]) -> str | None:
    """Agent name, else the run span's own name unless generic, else the service."""
    if run_span is None:  # provisional: the root, and so the name, has not arrived
        return first_value(members, "service_name")
    if run_span.agent_name:
        return run_span.agent_name
    name = run_span.name.strip()
    if name and name not in GENERIC_RUN_NAMES:
        return name
    return run_span.service_name or name or None
