"""MCP read routes: GET /api/mcp/sessions, /api/mcp/sessions/{id}, /api/mcp/tools.

Read tokens only, org-scoped, rate-limited like the dashboard read API; operations of the one
endpoint wrapper (`collector/api/routes.py`), queries through `mcp/queries.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.routing import BaseRoute

from collector.api import params as pm
from collector.api.apis import MCP
from collector.api.params import Params, decode_cursor, encode_cursor
from collector.api.ratelimit import Limiter, SlidingWindowLimiter
from collector.api.routes import Keys, Operation, PerKey, routes
from collector.api.shapes import iso, rfc3339
from collector.auth.keys import Authenticator
from collector.errors import ApiError
from collector.mcp import queries as mq
from collector.mcp.store import PRIMITIVE_TYPES
from collector.model import Principal
from collector.store.writer import Store

SESSION_SORT = "first_seen_desc"  # the one order; the cursor records it like the runs cursor


class McpReadApi:
    """Pass the dashboard read API's limiter to share one 300/minute budget per token."""

    def __init__(
        self,
        store: Store,
        auth: Authenticator,
        limiter: Limiter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._auth = auth
        self._limiter: Limiter = limiter or SlidingWindowLimiter(300, 60.0)
        self._clock = clock

    def routes(self) -> list[BaseRoute]:
        return routes(self.operations())

    def operations(self) -> list[Operation]:
        def get(path: str, handler: Any, summary: str, *params: pm.Param) -> Operation:
            return Operation(
                MCP,
                "GET",
                path,
                lambda call: handler(call.caller, call.query, call.path),
                summary,
                Keys(self._auth, ("read",)),
                params=params,
                limit=PerKey(self._limiter),
                blocking=True,
                clock=self._clock,
            )

        return [
            get(
                "/api/mcp/sessions",
                self._sessions,
                "MCP sessions, newest first",
                pm.FROM,
                pm.TO,
                pm.strings("server_name"),
                pm.strings("client_name"),
                pm.strings("user_id"),
                pm.strings("agent_id"),
                pm.CURSOR,
                pm.limit(),
            ),
            get(
                "/api/mcp/sessions/{session_id:path}",
                self._session,
                "One MCP session and its calls",
            ),
            get(
                "/api/mcp/tools",
                self._tools,
                "Per-primitive call statistics",
                pm.FROM,
                pm.TO,
                pm.strings("primitive_type", allowed=PRIMITIVE_TYPES),
                pm.strings("primitive_name"),
                pm.strings("server_name"),
            ),
        ]

    def _sessions(self, p: Principal, q: Params, _: dict[str, Any]) -> dict[str, Any]:
        where = mq.SessionFilter(
            org=p.org,
            window=q.window(),
            servers=q.strings("server_name"),
            clients=q.strings("client_name"),
            users=q.strings("user_id"),
            agents=q.strings("agent_id"),
        )
        limit = q.limit()
        after = decode_cursor(q, SESSION_SORT, "BIGINT")
        q.raise_if_invalid()
        page = mq.list_sessions(self._store, where, after, limit)
        nxt = page.next_position
        return {
            "sessions": [session(s) for s in page.sessions],
            "next_cursor": None if nxt is None else encode_cursor(SESSION_SORT, nxt[0], nxt[1]),
            "total_count": page.total_count,
        }

    def _session(self, p: Principal, q: Params, path: dict[str, str]) -> dict[str, Any]:
        found = mq.get_session(self._store, p.org, str(path["session_id"]))
        if found is None:
            raise ApiError(404, "not_found", "Session not found")
        s, calls = found
        return {"session": session(s), "calls": [call(c) for c in calls]}

    def _tools(self, p: Principal, q: Params, _: dict[str, Any]) -> dict[str, Any]:
        window = q.window()
        where = mq.ToolFilter(
            org=p.org,
            window=window,
            types=q.strings("primitive_type", PRIMITIVE_TYPES),
            names=q.strings("primitive_name"),
            servers=q.strings("server_name"),
        )
        q.raise_if_invalid()
        return {
            "from": iso(window.start),
            "to": iso(window.end),
            "tools": [primitive(t) for t in mq.primitive_stats(self._store, where)],
        }


# -- JSON shapes ----------------------------------------------------------------------------


def _map(text: str | None) -> dict[str, str]:
    value = json.loads(text) if text else {}
    return value if isinstance(value, dict) else {}


def _ms(x: float) -> float:
    return round(float(x), 3)


def session(s: mq.McpSession) -> dict[str, Any]:
    return {
        "session_id": s.session_id,
        "implicit": s.implicit,  # true when only events named it (no capture-session yet)
        "client_name": s.client_name,
        "client_version": s.client_version,
        "server_name": s.server_name,
        "server_version": s.server_version,
        "protocol_version": s.protocol_version,
        "user_id": s.user_id,
        "agent_id": s.agent_id,
        "metadata": _map(s.metadata),
        "started_at": rfc3339(s.started_us),
        "last_call_at": rfc3339(s.last_call_us),
        "call_count": s.calls,
        "error_count": s.errors,
        "success_rate": round((s.calls - s.errors) / s.calls, 6) if s.calls else None,
        "total_latency_ms": s.total_latency_ms,
    }


def call(c: mq.McpCall) -> dict[str, Any]:
    return {
        "event_id": c.event_id,
        "primitive_name": c.primitive_name,
        "primitive_type": c.primitive_type,
        "success": c.success,
        "latency_ms": c.latency_ms,
        "args": c.args,
        "args_truncated": c.args_truncated,
        "args_not_json": c.args_not_json,
        "result": c.result,
        "result_truncated": c.result_truncated,
        "result_not_json": c.result_not_json,
        "error": c.error,
        "checkpoints": [
            {
                "name": cp["name"],
                "timestamp": cp["timestamp_ms"],
                "duration_ms": cp["duration_ms"],
                "metadata": _map(cp["metadata"]),
            }
            for cp in c.checkpoints
        ],
        "metadata": _map(c.metadata),
        "started_at": rfc3339(c.started_us),
        "received_at": rfc3339(c.received_us),
    }


def primitive(t: mq.PrimitiveStats) -> dict[str, Any]:
    return {
        "primitive_name": t.primitive_name,
        "primitive_type": t.primitive_type,
        "calls": t.calls,
        "errors": t.errors,
        "success_rate": round(t.success_rate, 6),
        "avg_latency_ms": _ms(t.avg_latency_ms),
        "p50_latency_ms": _ms(t.p50_latency_ms),
        "p95_latency_ms": _ms(t.p95_latency_ms),
        "p99_latency_ms": _ms(t.p99_latency_ms),
        "max_latency_ms": t.max_latency_ms,
        "sessions": t.sessions,
        "slowest_checkpoints": [
            {"name": n, "avg_duration_ms": _ms(avg), "max_duration_ms": mx, "count": k}
            for n, avg, mx, k in t.slowest_checkpoints
        ],
        "error_examples": [
            {"event_id": e, "session_id": s, "error": err, "received_at": rfc3339(at)}
            for e, s, err, at in t.error_examples
        ],
    }
