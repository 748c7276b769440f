"""Named queries over the MCP capture tables: sessions (explicit or implied by their events),
one session's calls in arrival order, and per-primitive analytics.

Each is one fixed, parametrised SQL text scoped by org and capped in rows; `mcp_read_api`
parses the request, calls one of these and shapes the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.store.query import MAX_DETAIL_SPANS, MAX_GROUPS, Window, fetch
from collector.store.writer import Store

# The session a row names: its latest capture-session (if any) beside its events' totals. A
# session that only events name is "implicit"; it starts at its first arrival either way.
_SESSIONS_CTE = """
WITH s AS (
    SELECT * EXCLUDE (rn) FROM (
        SELECT *, row_number() OVER (PARTITION BY session_id ORDER BY seq DESC) AS rn,
               min(seq) OVER (PARTITION BY session_id) AS first_seq,
               min(received_at) OVER (PARTITION BY session_id) AS first_at
        FROM mcp_sessions WHERE org = $org AND ($session::VARCHAR IS NULL OR session_id = $session)
    ) WHERE rn = 1
), e AS (
    SELECT session_id, count(*) AS calls, count(*) FILTER (WHERE NOT success) AS errors,
           min(seq) AS first_seq, min(received_at) AS first_at, max(received_at) AS last_at,
           sum(latency_ms) AS total_latency_ms
    FROM mcp_events WHERE org = $org AND ($session::VARCHAR IS NULL OR session_id = $session)
    GROUP BY session_id
), f AS (
    SELECT coalesce(s.session_id, e.session_id) AS session_id, s.client_name, s.client_version,
           s.server_name, s.server_version, s.protocol_version, s.user_id, s.agent_id,
           s.metadata, s.session_id IS NULL AS implicit,
           least(s.first_seq, e.first_seq) AS first_seq,
           epoch_us(least(s.first_at, e.first_at)) AS started_us,
           epoch_us(e.last_at) AS last_call_us,
           coalesce(e.calls, 0) AS calls, coalesce(e.errors, 0) AS errors,
           coalesce(e.total_latency_ms, 0) AS total_latency_ms
    FROM s FULL OUTER JOIN e ON s.session_id = e.session_id
)"""

_SESSION_COLUMNS = """session_id, client_name, client_version, server_name, server_version,
    protocol_version, user_id, agent_id, metadata, implicit, first_seq, started_us,
    last_call_us, calls, errors, total_latency_ms"""

_LIST_SQL = f"""{_SESSIONS_CTE}, w AS (
    SELECT * FROM f
    WHERE started_us BETWEEN epoch_us($start) AND epoch_us($end)
      AND (len($servers) = 0 OR list_contains($servers, server_name))
      AND (len($clients) = 0 OR list_contains($clients, client_name))
      AND (len($users) = 0 OR list_contains($users, user_id))
      AND (len($agents) = 0 OR list_contains($agents, agent_id))
)
SELECT {_SESSION_COLUMNS}, (SELECT count(*) FROM w) FROM w
WHERE $after_seq::BIGINT IS NULL OR (first_seq, session_id) < ($after_seq, $after_id)
ORDER BY first_seq DESC, session_id DESC
LIMIT $limit"""

_ONE_SQL = f"{_SESSIONS_CTE} SELECT {_SESSION_COLUMNS} FROM f"

_CALLS_SQL = """SELECT event_id, primitive_name, primitive_type, success, latency_ms, args,
    args_truncated, result, result_truncated, error, checkpoints, metadata, seq,
    epoch_us(started_at), epoch_us(received_at),
    coalesce(args_not_json, false), coalesce(result_not_json, false)
    FROM mcp_events WHERE org = $org AND session_id = $session
    ORDER BY seq
    LIMIT $limit"""


@dataclass(frozen=True)
class McpSession:
    session_id: str
    client_name: str | None
    client_version: str | None
    server_name: str | None
    server_version: str | None
    protocol_version: str | None
    user_id: str | None
    agent_id: str | None
    metadata: str | None
    implicit: bool
    first_seq: int
    started_us: int
    last_call_us: int | None
    calls: int
    errors: int
    total_latency_ms: int


@dataclass(frozen=True)
class SessionFilter:
    org: str
    window: Window
    servers: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()


@dataclass(frozen=True)
class SessionPage:
    sessions: list[McpSession]
    total_count: int
    next_position: tuple[int, str] | None  # (first_seq, session_id) of the page's last row


@dataclass(frozen=True)
class McpCall:
    event_id: str
    primitive_name: str
    primitive_type: str
    success: bool
    latency_ms: int
    args: str | None
    args_truncated: bool
    result: str | None
    result_truncated: bool
    error: str | None
    checkpoints: list[dict[str, Any]]
    metadata: str | None
    seq: int
    started_us: int
    received_us: int
    args_not_json: bool  # the text as sent was not JSON (rows from before the flag: false)
    result_not_json: bool


def list_sessions(
    store: Store, where: SessionFilter, after: tuple[int | float, str] | None, limit: int
) -> SessionPage:
    """Sessions that started in the window, newest first, a page after `after`."""
    params: dict[str, Any] = {
        "org": where.org,
        "session": None,
        "start": where.window.start,
        "end": where.window.end,
        "servers": list(where.servers),
        "clients": list(where.clients),
        "users": list(where.users),
        "agents": list(where.agents),
        "after_seq": None if after is None else int(after[0]),
        "after_id": None if after is None else after[1],
        "limit": limit + 1,  # one more tells whether there is a next page
    }
    rows = fetch(store, _LIST_SQL, params)
    total = int(rows[0][-1]) if rows else 0
    sessions = [McpSession(*r[:-1]) for r in rows[:limit]]
    last = sessions[-1] if len(rows) > limit else None
    return SessionPage(sessions, total, None if last is None else (last.first_seq, last.session_id))


def get_session(store: Store, org: str, session_id: str) -> tuple[McpSession, list[McpCall]] | None:
    """One session and its first `MAX_DETAIL_SPANS` calls in arrival order; None if unknown."""
    rows = fetch(store, _ONE_SQL, {"org": org, "session": session_id})
    if not rows:
        return None
    params = {"org": org, "session": session_id, "limit": MAX_DETAIL_SPANS}
    calls = [McpCall(*r) for r in fetch(store, _CALLS_SQL, params)]
    return McpSession(*rows[0]), calls


# -- per-primitive analytics --------------------------------------------------------------

_SCOPE = """org = $org AND received_at BETWEEN $start AND $end
    AND (len($types) = 0 OR list_contains($types, primitive_type))
    AND (len($names) = 0 OR list_contains($names, primitive_name))
    AND (len($servers) = 0 OR session_id IN (
        SELECT session_id FROM mcp_sessions
        WHERE org = $org AND list_contains($servers, server_name)))"""

_TOOLS_SQL = f"""SELECT primitive_name, primitive_type, count(*) AS calls,
    count(*) FILTER (WHERE NOT success), avg(latency_ms),
    quantile_cont(latency_ms, [0.5, 0.95, 0.99]), max(latency_ms),
    count(DISTINCT session_id)
    FROM mcp_events WHERE {_SCOPE}
    GROUP BY ALL ORDER BY calls DESC, primitive_name, primitive_type
    LIMIT $limit"""

# A checkpoint's duration is the time from the checkpoint before it (see mcp_api).
_CHECKPOINTS_SQL = f"""SELECT primitive_name, primitive_type, name, avg(duration_ms) AS avg_ms,
    max(duration_ms), count(*)
    FROM (SELECT primitive_name, primitive_type, unnest(checkpoints, recursive := true)
          FROM mcp_events WHERE {_SCOPE})
    GROUP BY primitive_name, primitive_type, name
    QUALIFY row_number() OVER (PARTITION BY primitive_name, primitive_type
                               ORDER BY avg_ms DESC, name) <= $top"""

_ERRORS_SQL = f"""SELECT primitive_name, primitive_type, event_id, session_id, error,
    epoch_us(received_at)
    FROM mcp_events WHERE {_SCOPE} AND NOT success
    QUALIFY row_number() OVER (PARTITION BY primitive_name, primitive_type
                               ORDER BY seq DESC) <= $top"""


@dataclass(frozen=True)
class ToolFilter:
    org: str
    window: Window
    types: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrimitiveStats:
    primitive_name: str
    primitive_type: str
    calls: int
    errors: int
    avg_latency_ms: float
    p50_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float
    max_latency_ms: int
    sessions: int
    slowest_checkpoints: list[tuple[str, float, int, int]]  # (name, avg ms, max ms, count)
    error_examples: list[tuple[str, str, str | None, int]]  # (event, session, error, at µs)

    @property
    def success_rate(self) -> float:
        return (self.calls - self.errors) / self.calls if self.calls else 0.0


def primitive_stats(store: Store, where: ToolFilter, top: int = 3) -> list[PrimitiveStats]:
    """Per (primitive_name, primitive_type) called in the window, most-called first: counts,
    latency mean and p50/p95/p99 (linear interpolation), the `top` checkpoints with the
    longest mean duration and the `top` newest failures."""
    params: dict[str, Any] = {
        "org": where.org,
        "start": where.window.start,
        "end": where.window.end,
        "types": list(where.types),
        "names": list(where.names),
        "servers": list(where.servers),
    }
    rows = fetch(store, _TOOLS_SQL, {**params, "limit": MAX_GROUPS})
    if not rows:
        return []
    checkpoints: dict[tuple[str, str], list[tuple[str, float, int, int]]] = {}
    for r in fetch(store, _CHECKPOINTS_SQL, {**params, "top": top}):
        checkpoints.setdefault((r[0], r[1]), []).append((r[2], float(r[3]), int(r[4]), int(r[5])))
    errors: dict[tuple[str, str], list[tuple[str, str, str | None, int]]] = {}
    for r in fetch(store, _ERRORS_SQL, {**params, "top": top}):
        errors.setdefault((r[0], r[1]), []).append((r[2], r[3], r[4], int(r[5])))
    out = []
    for name, kind, calls, errs, avg, (p50, p95, p99), mx, sessions in rows:
        key = (name, kind)
        out.append(
            PrimitiveStats(
                name,
                kind,
                int(calls),
                int(errs),
                float(avg),
                float(p50),
                float(p95),
                float(p99),
                int(mx),
                int(sessions),
                sorted(checkpoints.get(key, []), key=lambda c: (-c[1], c[0])),
                sorted(errors.get(key, []), key=lambda e: -e[3]),
            )
        )
    return out
