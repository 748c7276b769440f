"""MCP capture ingest (the Agnost capture-event API doc): POST /api/v1/capture-session and
/api/v1/capture-event, validated into `mcp_sessions` / `mcp_events` rows and group-committed.

An MCP server (or its SDK) sends one call per request with its ingest key in `X-Org-Id` (or
`Authorization: Bearer`); the answer, `{"event_id"}`, comes only once the row is durable.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from typing import Any

from starlette.routing import BaseRoute

from collector.api import schema as sc
from collector.api.apis import MCP
from collector.api.routes import Call, Keys, Operation, routes
from collector.auth.keys import Authenticator
from collector.errors import ApiError
from collector.mcp import store as mcp_store
from collector.mcp.config import McpConfig
from collector.mcp.store import PRIMITIVE_TYPES
from collector.model import Rows
from collector.store.sequence import Sequencer
from collector.store.writer import Store
from processors.redact.rules import Redactor

log = logging.getLogger(__name__)

SESSION_FIELDS = (
    "client_name",
    "client_version",
    "server_name",
    "server_version",
    "protocol_version",
    "user_id",
    "agent_id",
)
MAX_ID_CHARS = 256
MAX_LATENCY_MS = 2**31 - 1  # about 25 days: anything longer is a unit mistake
MAX_CHECKPOINTS = 100
MAX_METADATA_KEYS = 100
MAX_ERROR_CHARS = 1000
MAX_INFLIGHT = 20_000  # requests waiting for their commit; past it we answer 503 at once


_ID = sc.string(MAX_ID_CHARS, min_length=1)
_METADATA = sc.obj(
    {},
    maxProperties=MAX_METADATA_KEYS,
    description="any values; stored as strings (JSON text for non-strings)",
)
EVENT_BODY = sc.obj(
    {
        "session_id": _ID,
        "primitive_name": _ID,
        "primitive_type": sc.enum(PRIMITIVE_TYPES),
        "success": sc.boolean(),
        "latency": sc.integer(0, MAX_LATENCY_MS, description="milliseconds"),
        "args": sc.string(description="JSON-encoded arguments (other text is kept, flagged)"),
        "result": sc.string(description="JSON-encoded result (other text is kept, flagged)"),
        "checkpoints": sc.array(
            sc.obj(
                {
                    "name": _ID,
                    "timestamp": sc.integer(0, MAX_LATENCY_MS),
                    "metadata": _METADATA,
                },
                ["name", "timestamp"],
            ),
            MAX_CHECKPOINTS,
        ),
        "metadata": _METADATA,
    },
    ["session_id", "primitive_name", "primitive_type", "success", "latency"],
)
SESSION_BODY = sc.obj(
    {
        "session_id": _ID,
        **{name: sc.string(MAX_ID_CHARS) for name in SESSION_FIELDS},
        "metadata": _METADATA,
    },
    ["session_id"],
)
ANSWER = {
    "event_id": sc.obj({"event_id": sc.string()}, ["event_id"]),
    "session_id": sc.obj({"session_id": sc.string()}, ["session_id"]),
}


class _Fields:
    """One body being validated: each problem is a `{"field", "message"}` of the 422."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.problems: list[dict[str, str]] = []

    def problem(self, field: str, message: str) -> None:
        self.problems.append({"field": field, "message": message})

    def raise_if_invalid(self, what: str) -> None:
        if self.problems:
            raise ApiError(422, "validation_error", f"Invalid {what}", self.problems)

    def text(self, name: str, *, required: bool = False, limit: int = MAX_ID_CHARS) -> str | None:
        value = self.body.get(name)
        if value is None:
            if required:
                self.problem(name, "is required")
            return None
        if not isinstance(value, str) or (required and not value):
            self.problem(name, "must be a non-empty string" if required else "must be a string")
            return None
        if len(value) > limit:
            self.problem(name, f"must be at most {limit} characters")
            return None
        return value

    def payload_text(self, name: str) -> tuple[str | None, bool]:
        """An optional string the doc calls "JSON-encoded", and whether it is not JSON text: an
        SDK that sends plain text (an error message, a Python repr) still has its call kept,
        with the text as sent and flagged, never refused."""
        value = self.body.get(name)
        if value is None:
            return None, False
        if not isinstance(value, str):
            self.problem(name, "must be a JSON-encoded string (encode the value with JSON)")
            return None, False
        try:
            json.loads(value)
        except (ValueError, RecursionError):
            return value, True
        return value, False


def _integer(value: Any) -> int | None:
    """A JSON integer (342, or 342.0, which JSON Schema also counts as one); bools are not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def string_map(f: _Fields, field: str, value: Any) -> dict[str, str]:
    """A metadata object with every value as a string ("All values stored as strings"):
    strings as sent, anything else as its JSON text (5 → "5", true → "true")."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        f.problem(field, "must be an object")
        return {}
    if len(value) > MAX_METADATA_KEYS:
        f.problem(field, f"must have at most {MAX_METADATA_KEYS} keys")
        return {}
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        for k, v in value.items()
    }


def _checkpoints(f: _Fields) -> list[dict[str, Any]]:
    value = f.body.get("checkpoints")
    if value is None:
        return []
    if not isinstance(value, list):
        f.problem("checkpoints", "must be an array")
        return []
    if len(value) > MAX_CHECKPOINTS:
        f.problem("checkpoints", f"must have at most {MAX_CHECKPOINTS} entries")
        return []
    out: list[dict[str, Any]] = []
    for i, cp in enumerate(value):
        where = f"checkpoints[{i}]"
        if not isinstance(cp, dict):
            f.problem(where, "must be an object")
            continue
        name, at = cp.get("name"), _integer(cp.get("timestamp"))
        if not isinstance(name, str) or not name or len(name) > MAX_ID_CHARS:
            f.problem(f"{where}.name", f"must be a string of 1 to {MAX_ID_CHARS} characters")
        if at is None or not 0 <= at <= MAX_LATENCY_MS:
            f.problem(f"{where}.timestamp", "must be an integer of milliseconds >= 0")
        meta = string_map(f, f"{where}.metadata", cp.get("metadata"))
        out.append({"name": name, "timestamp_ms": at, "metadata": json.dumps(meta)})
    if f.problems:
        return []
    # A checkpoint marks when a step ended, so its duration runs from the one before it.
    out.sort(key=lambda c: c["timestamp_ms"])
    previous = 0
    for step in out:
        step["duration_ms"] = step["timestamp_ms"] - previous
        previous = step["timestamp_ms"]
    return out


def keep_payload(text: str | None, config: McpConfig) -> tuple[str | None, bool]:
    """What the privacy switch keeps of `args`/`result`, and whether it cut the text."""
    if text is None or config.payloads == "none":
        return None, False
    if config.payloads == "truncate" and len(text) > config.max_payload_chars:
        return text[: config.max_payload_chars], True
    return text, False


def parse_event(
    body: dict[str, Any], config: McpConfig, redactor: Redactor | None = None
) -> dict[str, Any]:
    """The `mcp_events` columns a capture-event body gives (all but org, ids and times);
    raises a 422 `ApiError` listing every problem. `redactor` masks args, result and metadata
    before they are cut to size or stored."""
    f = _Fields(body)
    session_id = f.text("session_id", required=True)
    name = f.text("primitive_name", required=True)
    kind = body.get("primitive_type")
    if kind is None:
        f.problem("primitive_type", "is required")
    elif kind not in PRIMITIVE_TYPES:
        f.problem("primitive_type", f"must be one of {', '.join(PRIMITIVE_TYPES)}")
    success = body.get("success")
    if not isinstance(success, bool):
        f.problem("success", "is required" if success is None else "must be true or false")
    latency = _integer(body.get("latency"))
    if "latency" not in body or body["latency"] is None:
        f.problem("latency", "is required")
    elif latency is None or not 0 <= latency <= MAX_LATENCY_MS:
        f.problem("latency", f"must be an integer of milliseconds from 0 to {MAX_LATENCY_MS}")
    args, args_not_json = f.payload_text("args")
    result, result_not_json = f.payload_text("result")
    checkpoints = _checkpoints(f)
    metadata = string_map(f, "metadata", body.get("metadata"))
    f.raise_if_invalid("capture event")
    if redactor is not None:
        args = None if args is None else redactor.text(args, field="args")
        result = None if result is None else redactor.text(result, field="result")
        metadata = {k: redactor.text(v, field=k) for k, v in metadata.items()}
    stored_args, args_cut = keep_payload(args, config)
    stored_result, result_cut = keep_payload(result, config)
    error = metadata.get("error") or metadata.get("error_message")
    if error is None and success is False:
        error = stored_result  # the doc has no error field: a failed call's output says why
    return {
        "session_id": session_id,
        "primitive_name": name,
        "primitive_type": kind,
        "success": success,
        "latency_ms": latency,
        "args": stored_args,
        "args_truncated": args_cut,
        "result": stored_result,
        "result_truncated": result_cut,
        "error": error[:MAX_ERROR_CHARS] if error else None,
        "checkpoints": checkpoints,
        "metadata": json.dumps(metadata),
        "trace_id": metadata.get("trace_id"),
        "args_not_json": args_not_json,
        "result_not_json": result_not_json,
    }


def parse_session(body: dict[str, Any]) -> dict[str, Any]:
    """The `mcp_sessions` columns of a capture-session body; 422 on any problem."""
    f = _Fields(body)
    row: dict[str, Any] = {"session_id": f.text("session_id", required=True)}
    for name in SESSION_FIELDS:
        row[name] = f.text(name)
    row["metadata"] = json.dumps(string_map(f, "metadata", body.get("metadata")))
    f.raise_if_invalid("capture session")
    return row


class McpApi:
    """The two capture routes; every write is one row through the store's group commit."""

    def __init__(
        self,
        store: Store,
        auth: Authenticator,
        config: McpConfig,
        redactor: Redactor | None = None,
    ) -> None:
        self._store = store
        self._auth = auth
        self._config = config
        self._redactor = redactor
        self._seq = Sequencer()
        self._inflight = 0

    def create_tables(self) -> None:
        self._store.call(mcp_store.create_tables)

    def routes(self) -> list[BaseRoute]:
        return routes(self.operations())

    def operations(self) -> list[Operation]:
        def capture(path: str, body: sc.Schema, handler: Any, answer: str, summary: str) -> Any:
            parse = parse_session if answer == "session_id" else self._parse_event
            return Operation(
                MCP,
                "POST",
                path,
                handler,
                summary,
                Keys(self._auth, ("ingest",), key_header="x-org-id"),
                body=body,
                parse=parse,
                body_limit=self._config.max_body_bytes,
                response=ANSWER[answer],
                errors={503: "too many captures waiting for a commit, or the store is down"},
            )

        return [
            capture(
                "/api/v1/capture-session",
                SESSION_BODY,
                self._capture_session,
                "session_id",
                "Record (or update) an MCP session",
            ),
            capture(
                "/api/v1/capture-event",
                EVENT_BODY,
                self._capture_event,
                "event_id",
                "Record one MCP tool, resource or prompt call",
            ),
        ]

    def _parse_event(self, body: dict[str, Any]) -> dict[str, Any]:
        return parse_event(body, self._config, self._redactor)

    async def _capture_session(self, call: Call) -> Any:
        return await self._capture(call, "mcp_sessions", "session_id")

    async def _capture_event(self, call: Call) -> Any:
        return await self._capture(call, "mcp_events", "event_id")

    async def _capture(self, call: Call, table: str, answer: str) -> Any:
        org, row = call.org, call.body
        if self._inflight >= MAX_INFLIGHT:
            raise ApiError(
                503,
                "unavailable",
                "Too many capture requests waiting for a commit",
                headers={"Retry-After": "1"},
            )
        seq, at = self._seq.next()
        row.update(org=org, seq=seq, received_at=at)
        if table == "mcp_events":
            row["event_id"] = str(uuid.uuid4())
            # The doc sends no timestamp: the call ended about when it was reported.
            row["started_at"] = at - timedelta(milliseconds=row["latency_ms"])
        rows = Rows(None, org, mcp_store.to_table(table, [row]), target=table)
        self._inflight += 1
        try:
            await self._store.append(rows)
        finally:
            self._inflight -= 1
        return {answer: row[answer]}
