"""The body of POST /api/logs (the Tracira logs API doc): every field and alias, validated into a
`LogInput`, with each problem as a `{"field", "message"}` of one 422.

No-code tools send blanks as "" and numbers as strings: an empty optional field counts as absent
and numeric strings are read as numbers. `logs_api` stores the result and evaluates it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from collector.api import schema as sc
from collector.api.params import parse_time
from collector.errors import ApiError

MAX_OUTPUT_CHARS = 50_000
MAX_NAME_CHARS = 200
MAX_INPUT_CHARS = 200_000
MAX_TAGS = 50
CALLBACK_EVENTS = ("all", "flagged_error", "decisions", "flagged_error_decisions", "pass")
PART_TYPES = ("text", "image_url", "audio_url", "file_url")
ALIASES: dict[str, tuple[str, ...]] = {
    "sessionId": ("sessionId", "conversationId", "threadId", "chatId"),
    "subjectId": ("subjectId", "customerId", "recordId", "ticketId", "accountId"),
    "actorId": ("actorId", "userId", "endUserId", "agentId"),
}
LOG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")


# What the wrapper checks before `parse_log`: loose types, as no-code tools send numbers as
# strings and blanks as "" (`parse_log` reads those).
_TEXT = sc.any_of(sc.string(), sc.number())
_NUMBER = sc.any_of(sc.number(), sc.string(64))
LOG_BODY = sc.obj(
    {
        "project": sc.any_of(sc.string(MAX_NAME_CHARS, blank=False), sc.number()),
        "output": {"description": "text (up to 50,000 characters); JSON is kept as its text"},
        "task": _TEXT,
        "model": _TEXT,
        "latencyMs": _NUMBER,
        "costUsd": _NUMBER,
        "confidence": _NUMBER,
        "input": sc.any_of(
            sc.string(), sc.array(sc.obj({}), description=f"parts: type {', '.join(PART_TYPES)}")
        ),
        "inputText": _TEXT,
        "attachments": sc.array(sc.obj({"url": sc.string(2048), "upload": sc.string()})),
        "callbackUrl": sc.string(2048),
        "callbackEvents": sc.enum((*CALLBACK_EVENTS, "")),
        "metadata": sc.any_of(sc.obj({}), sc.const("")),
        "id": sc.string(128),
        "sync": sc.any_of(sc.boolean(), sc.string(8)),
        "timestamp": sc.string(64),
        "tags": sc.any_of(sc.array(sc.string()), sc.string()),
        **{alias: _TEXT for names in ALIASES.values() for alias in names},
    },
    ["project", "output"],
)


@dataclass
class LogInput:
    project: str
    output: str
    task: str | None = None
    model: str | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None
    input: Any = None
    input_text: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    callback_url: str | None = None
    callback_events: str | None = None
    metadata: dict[str, Any] | None = None
    id: str | None = None
    sync: bool = False
    confidence: float | None = None
    session_id: str | None = None
    subject_id: str | None = None
    actor_id: str | None = None
    timestamp: datetime | None = None
    tags: list[str] = field(default_factory=list)


class _Body:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.problems: list[dict[str, str]] = []

    def problem(self, name: str, message: str) -> None:
        self.problems.append({"field": name, "message": message})

    def get(self, name: str) -> Any:
        value = self.body.get(name)
        return None if value == "" else value

    def text(self, name: str, limit: int = MAX_NAME_CHARS, required: bool = False) -> str | None:
        value = self.body.get(name) if required else self.get(name)
        if value is None:
            if required:
                self.problem(name, "is required")
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.problem(name, "must be a string")
            return None
        if required and not value.strip():
            self.problem(name, "must not be empty")
            return None
        if len(value) > limit:
            self.problem(name, f"must be at most {limit:,} characters")
            return None
        return value.strip() if limit <= MAX_NAME_CHARS else value

    def number(self, name: str, lo: float = 0.0, hi: float = math.inf) -> float | None:
        value = self.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                self.problem(name, "must be a number")
                return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self.problem(name, "must be a number")
            return None
        if not lo <= value <= hi:
            bound = f"between {lo:g} and {hi:g}" if math.isfinite(hi) else f">= {lo:g}"
            self.problem(name, f"must be {bound}")
            return None
        return float(value)


def parse_log(body: dict[str, Any]) -> LogInput:
    b = _Body(body)
    project = b.text("project", required=True)
    output = _output(b)
    log = LogInput(project=project or "", output=output or "")
    log.task = b.text("task")
    log.model = b.text("model")
    log.latency_ms = b.number("latencyMs")
    log.cost_usd = b.number("costUsd")
    log.confidence = b.number("confidence", 0.0, 1.0)
    log.input = _input(b)
    log.input_text = b.text("inputText", MAX_INPUT_CHARS)
    log.attachments = _attachments(b)
    log.callback_url = b.text("callbackUrl", 2048)
    if log.callback_url is not None and not re.match(r"https?://", log.callback_url, re.I):
        b.problem("callbackUrl", "must be an http:// or https:// URL")
    log.callback_events = b.text("callbackEvents")
    if log.callback_events is not None and log.callback_events not in CALLBACK_EVENTS:
        b.problem("callbackEvents", f"must be one of {', '.join(CALLBACK_EVENTS)}")
    if log.callback_url is not None and log.callback_events is None:
        log.callback_events = "all"
    metadata = b.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        b.problem("metadata", "must be an object")
    log.metadata = metadata if isinstance(metadata, dict) else None
    log.id = b.text("id")
    if log.id is not None and not LOG_ID.fullmatch(log.id):
        b.problem(
            "id", "must be 1-128 letters, digits or . _ : @ - (starting with a letter or digit)"
        )
    log.sync = _boolean(b, "sync")
    for canonical, names in ALIASES.items():
        value = next((b.text(n) for n in names if b.get(n) is not None), None)
        setattr(log, _snake(canonical), value)
    raw_time = b.get("timestamp")
    if raw_time is not None:
        log.timestamp = parse_time(str(raw_time)) if isinstance(raw_time, str | int) else None
        if log.timestamp is None:
            b.problem("timestamp", "must be an ISO 8601 date-time, e.g. 2024-11-15T10:30:00Z")
    log.tags = _tags(b, log.metadata)
    if b.problems:
        raise ApiError(422, "validation_error", "Invalid log", b.problems)
    return log


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", name).lower()


def _output(b: _Body) -> str | None:
    value = b.body.get("output")
    if value is None:
        b.problem("output", "is required")
        return None
    if isinstance(value, dict | list):  # an AI node's JSON result: keep it as JSON text
        value = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        b.problem("output", "must be a string")
        return None
    if len(value) > MAX_OUTPUT_CHARS:
        b.problem("output", f"must be at most {MAX_OUTPUT_CHARS:,} characters (got {len(value):,})")
        return None
    return value


def _boolean(b: _Body, name: str) -> bool:
    value = b.get(name)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    b.problem(name, "must be true or false")
    return False


def _input(b: _Body) -> Any:
    value = b.get("input")
    if value is None or isinstance(value, str):
        if isinstance(value, str) and len(value) > MAX_INPUT_CHARS:
            b.problem("input", f"must be at most {MAX_INPUT_CHARS:,} characters")
        return value
    if not isinstance(value, list):
        b.problem("input", "must be a string or an array of content parts")
        return None
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in PART_TYPES:
            b.problem(f"input[{i}].type", f"must be one of {', '.join(PART_TYPES)}")
        elif kind == "text" and not isinstance(part.get("text"), str):
            b.problem(f"input[{i}].text", "must be a string")
        elif kind != "text" and _part_url(part) is None:
            b.problem(f"input[{i}].{kind}", "needs a url (a string or {url: …})")
    return value


def _part_url(part: dict[str, Any]) -> str | None:
    inner = part.get(part["type"], part.get("url"))
    if isinstance(inner, dict):
        inner = inner.get("url")
    return inner if isinstance(inner, str) and inner else None


def _attachments(b: _Body) -> list[dict[str, Any]]:
    value = b.get("attachments")
    if value is None:
        return []
    if not isinstance(value, list):
        b.problem("attachments", "must be an array of {url} or {upload} objects")
        return []
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"attachments[{i}]"
        if not isinstance(item, dict):
            b.problem(where, "must be an object with a url or an upload (base64)")
            continue
        url, upload = item.get("url"), item.get("upload", item.get("data", item.get("base64")))
        if (url is None) == (upload is None):
            b.problem(where, "needs exactly one of url or upload (base64)")
            continue
        if url is not None and (not isinstance(url, str) or not re.match(r"https?://", url, re.I)):
            b.problem(f"{where}.url", "must be an http:// or https:// URL")
            continue
        if upload is not None and not isinstance(upload, str):
            b.problem(f"{where}.upload", "must be a base64 string")
            continue
        name = item.get("name", item.get("filename", item.get("fileName")))
        kind = item.get("contentType", item.get("mimeType", item.get("mediaType")))
        out.append(
            {
                "url": url,
                "upload": upload,
                "name": str(name) if name else None,
                "contentType": str(kind) if kind else None,
            }
        )
    return out


def _tags(b: _Body, metadata: dict[str, Any] | None) -> list[str]:
    tags: list[str] = []
    for source, value in (("tags", b.get("tags")), ("metadata.tags", (metadata or {}).get("tags"))):
        if value is None:
            continue
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(t, str | int) for t in items):
            b.problem(source, "must be an array of strings or a comma-separated string")
            continue
        tags += [str(t).strip() for t in items if str(t).strip()]
    unique = list(dict.fromkeys(tags))
    if len(unique) > MAX_TAGS:
        b.problem("tags", f"at most {MAX_TAGS} tags")
    return unique[:MAX_TAGS]
