"""MCP capture tables (`mcp_sessions`, `mcp_events`): their columns, DDL and Arrow rows.

`mcp_api` turns validated capture-session / capture-event bodies into these rows and appends
them through the store's group commit; `mcp_query` and the `tool_calls` view read them back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from collector.store.lake import LAKE, add_new_columns
from collector.store.schema import Column

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PRIMITIVE_TYPES = ("tool", "resource", "prompt")


_STR, _I64, _BOOL = pa.string(), pa.int64(), pa.bool_()
_TS = pa.timestamp("us", tz="UTC")
CHECKPOINT = pa.struct(
    [
        ("name", _STR),
        ("timestamp_ms", _I64),
        ("duration_ms", _I64),
        ("metadata", _STR),
    ]
)
_CHECKPOINTS_SQL = (
    "STRUCT(name VARCHAR, timestamp_ms BIGINT, duration_ms BIGINT, metadata VARCHAR)[]"
)

SESSION_COLUMNS: tuple[Column, ...] = (
    Column("org", _STR, "VARCHAR", "owning org"),
    Column("session_id", _STR, "VARCHAR", "the id the MCP server chose"),
    Column("seq", _I64, "BIGINT", "arrival order (µs clock, strictly increasing)"),
    Column("received_at", _TS, "TIMESTAMPTZ"),
    Column("client_name", _STR, "VARCHAR", "MCP clientInfo.name"),
    Column("client_version", _STR, "VARCHAR"),
    Column("server_name", _STR, "VARCHAR", "MCP serverInfo.name"),
    Column("server_version", _STR, "VARCHAR"),
    Column("protocol_version", _STR, "VARCHAR"),
    Column("user_id", _STR, "VARCHAR"),
    Column("agent_id", _STR, "VARCHAR"),
    Column("metadata", _STR, "JSON", "object of strings"),
)

EVENT_COLUMNS: tuple[Column, ...] = (
    Column("org", _STR, "VARCHAR", "owning org"),
    Column("event_id", _STR, "VARCHAR", "uuid4 answered to the caller"),
    Column("session_id", _STR, "VARCHAR"),
    Column("seq", _I64, "BIGINT", "arrival order (µs clock, strictly increasing)"),
    Column("received_at", _TS, "TIMESTAMPTZ", "taken as the call's end"),
    Column("started_at", _TS, "TIMESTAMPTZ", "received_at - latency"),
    Column("primitive_name", _STR, "VARCHAR"),
    Column("primitive_type", _STR, "VARCHAR", "tool | resource | prompt"),
    Column("success", _BOOL, "BOOLEAN"),
    Column("latency_ms", _I64, "BIGINT"),
    Column("args", _STR, "VARCHAR", "text as sent (JSON, or flagged), cut, or NULL (privacy)"),
    Column("args_truncated", _BOOL, "BOOLEAN"),
    Column("result", _STR, "VARCHAR", "text as sent (JSON, or flagged), cut, or NULL (privacy)"),
    Column("result_truncated", _BOOL, "BOOLEAN"),
    Column("error", _STR, "VARCHAR", "metadata error/error_message, else a failed result"),
    Column("checkpoints", pa.list_(CHECKPOINT), _CHECKPOINTS_SQL, "sorted by timestamp"),
    Column("metadata", _STR, "JSON", "object of strings"),
    Column("trace_id", _STR, "VARCHAR", "metadata.trace_id, to join OTel runs"),
    # Added after the first release, so last (older stores gain them on start, appended).
    Column("args_not_json", _BOOL, "BOOLEAN", "args was not JSON text; kept as sent"),
    Column("result_not_json", _BOOL, "BOOLEAN", "result was not JSON text; kept as sent"),
)

TABLES: dict[str, tuple[Column, ...]] = {
    "mcp_sessions": SESSION_COLUMNS,
    "mcp_events": EVENT_COLUMNS,
}
SCHEMAS = {name: pa.schema([(c.name, c.arrow) for c in cols]) for name, cols in TABLES.items()}


def create_tables(cur: duckdb.DuckDBPyConnection) -> None:
    """Create the MCP tables in the lake if they are missing, and add the columns a store made
    by an older version lacks (idempotent)."""
    for name, cols in TABLES.items():
        body = ",\n  ".join(f"{c.name} {c.sql}" for c in cols)
        cur.execute(f"CREATE TABLE IF NOT EXISTS {LAKE}.{name} (\n  {body}\n)")
        add_new_columns(cur, name, cols)


def to_table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (dicts keyed by column) as an Arrow table in the column order the store inserts."""
    return pa.Table.from_pylist(rows, schema=SCHEMAS[name])
