"""Tables of output evaluation: logs, projects, tasks, rules and workspace settings (deliveries
wait in the shared outbox, `collector/outbound/outbox.py`).

The logs API and its evaluator write them through the store's writer thread (`store.acall`, one
transaction each, which also makes caller-id idempotency and name uniqueness safe: one writer);
`logs_query` reads them. DuckLake has no unique constraints, so uniqueness is checked here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from collector.store.lake import LAKE

LOG_COLUMNS: tuple[tuple[str, str], ...] = (
    ("org", "VARCHAR"),
    ("id", "VARCHAR"),  # the caller's id (idempotent writes) or a uuid4
    ("project_id", "VARCHAR"),
    ("project", "VARCHAR"),
    ("task", "VARCHAR"),
    ("status", "VARCHAR"),  # pending | pass | flagged | error
    ("created_at", "TIMESTAMPTZ"),  # the log's date: the body's `timestamp` or receipt
    ("received_at", "TIMESTAMPTZ"),
    ("seq", "BIGINT"),  # arrival order, a tie-break for equal timestamps
    ("key_id", "VARCHAR"),  # display prefix of the token that sent it (never the secret)
    ("output", "VARCHAR"),
    ("input", "JSON"),  # text or multimodal parts, as sent (redacted once evaluated)
    ("input_text", "VARCHAR"),
    ("model", "VARCHAR"),
    ("latency_ms", "DOUBLE"),
    ("cost_usd", "DOUBLE"),
    ("confidence", "DOUBLE"),  # the model's self-reported confidence
    ("metadata", "JSON"),
    ("tags", "VARCHAR[]"),
    ("session_id", "VARCHAR"),
    ("subject_id", "VARCHAR"),
    ("actor_id", "VARCHAR"),
    ("attachments", "JSON"),  # [{key, name, contentType, size, source}]
    ("callback_url", "VARCHAR"),
    ("callback_events", "VARCHAR"),
    ("rules", "JSON"),  # per-rule results of the evaluation
    ("confidence_score", "DOUBLE"),
    ("explanation", "VARCHAR"),
    ("evaluated_at", "TIMESTAMPTZ"),
    ("decision", "VARCHAR"),  # approved | rejected | NULL
    ("decided_by", "VARCHAR"),
    ("decided_at", "TIMESTAMPTZ"),
    ("run_id", "VARCHAR"),  # the traced run it was evaluated from, else NULL
)
LOG_NAMES = tuple(n for n, _ in LOG_COLUMNS)

TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "eval_logs": LOG_COLUMNS,
    "eval_projects": (
        ("org", "VARCHAR"),
        ("id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("icon", "VARCHAR"),
        ("created_at", "TIMESTAMPTZ"),
    ),
    "eval_tasks": (
        ("org", "VARCHAR"),
        ("id", "VARCHAR"),
        ("project_id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("created_at", "TIMESTAMPTZ"),
    ),
    "eval_rules": (
        ("org", "VARCHAR"),
        ("id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("type", "VARCHAR"),
        ("description", "VARCHAR"),
        ("value", "VARCHAR"),
        ("is_active", "BOOLEAN"),
        ("project_id", "VARCHAR"),  # NULL: every project (global)
        ("task_name", "VARCHAR"),  # NULL: every task of the scope
        ("workflow", "VARCHAR"),  # a traced workflow's name: evaluates its finished runs
        ("judge_provider", "VARCHAR"),
        ("judge_model", "VARCHAR"),
        ("created_at", "TIMESTAMPTZ"),
        ("updated_at", "TIMESTAMPTZ"),
    ),
    "eval_workspace": (
        ("org", "VARCHAR"),
        ("settings", "JSON"),  # the PATCH-able, non-secret settings
        ("secrets", "JSON"),  # name -> SecretBox-sealed value
        ("token_id", "VARCHAR"),
        ("token_hash", "VARCHAR"),  # SHA-256 of the workspace token's secret
        ("token_created_at", "TIMESTAMPTZ"),
        ("rotations", "JSON"),  # ISO times of the last hour's rotations
        ("updated_at", "TIMESTAMPTZ"),
    ),
}


_ARROW = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "VARCHAR[]": pa.list_(pa.string()),
}
LOG_SCHEMA = pa.schema([(n, _ARROW[t]) for n, t in LOG_COLUMNS])


def log_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Log rows as Arrow in the table's column order (for the store's group commit)."""
    return pa.Table.from_pylist([{n: r.get(n) for n in LOG_NAMES} for r in rows], LOG_SCHEMA)


def create_tables(cur: duckdb.DuckDBPyConnection) -> None:
    for name, cols in TABLES.items():
        body = ", ".join(f"{n} {t}" for n, t in cols)
        cur.execute(f"CREATE TABLE IF NOT EXISTS {LAKE}.{name} ({body})")


def new_id() -> str:
    return str(uuid.uuid4())


def insert(cur: duckdb.DuckDBPyConnection, table: str, row: dict[str, Any]) -> None:
    """One row; `table` is one of ours, the values go in as parameters."""
    names = [n for n, _ in TABLES[table]]
    marks = ", ".join("?" for _ in names)
    cur.execute(f"INSERT INTO {table} VALUES ({marks})", [row.get(n) for n in names])


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def loads(text: Any) -> Any:
    return None if text is None else json.loads(text)


# -- projects and tasks --------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    icon: str | None
    created_at: datetime


def find_project(cur: duckdb.DuckDBPyConnection, org: str, name_or_id: str) -> Project | None:
    row = cur.execute(
        "SELECT id, name, icon, created_at FROM eval_projects WHERE org = ? AND (id = ? OR "
        "name = ?) ORDER BY id = ? DESC LIMIT 1",
        [org, name_or_id, name_or_id, name_or_id],
    ).fetchone()
    return None if row is None else Project(*row)


def project_by_name(cur: duckdb.DuckDBPyConnection, org: str, name: str) -> Project | None:
    row = cur.execute(
        "SELECT id, name, icon, created_at FROM eval_projects WHERE org = ? AND name = ? LIMIT 1",
        [org, name],
    ).fetchone()
    return None if row is None else Project(*row)


def ensure_project(cur: duckdb.DuckDBPyConnection, org: str, name: str, now: datetime) -> Project:
    found = project_by_name(cur, org, name)
    if found is not None:
        return found
    project = Project(new_id(), name, None, now)
    insert(
        cur,
        "eval_projects",
        {"org": org, "id": project.id, "name": name, "icon": None, "created_at": now},
    )
    return project


def task_exists(cur: duckdb.DuckDBPyConnection, org: str, project_id: str, name: str) -> bool:
    return (
        cur.execute(
            "SELECT 1 FROM eval_tasks WHERE org = ? AND project_id = ? AND name = ? LIMIT 1",
            [org, project_id, name],
        ).fetchone()
        is not None
    )


def ensure_task(
    cur: duckdb.DuckDBPyConnection, org: str, project_id: str, name: str, now: datetime
) -> None:
    if not task_exists(cur, org, project_id, name):
        insert(
            cur,
            "eval_tasks",
            {"org": org, "id": new_id(), "project_id": project_id, "name": name, "created_at": now},
        )


# -- logs ----------------------------------------------------------------------------------


def get_log(cur: duckdb.DuckDBPyConnection, org: str, log_id: str) -> dict[str, Any] | None:
    cur.execute(
        f"SELECT {', '.join(LOG_NAMES)} FROM eval_logs WHERE org = ? AND id = ?", [org, log_id]
    )
    row = cur.fetchone()
    return None if row is None else dict(zip(LOG_NAMES, row, strict=True))


def pending_logs(cur: duckdb.DuckDBPyConnection, limit: int) -> list[tuple[str, str]]:
    """(org, id) of logs waiting for evaluation, oldest first (a restart's backlog)."""
    rows = cur.execute(
        "SELECT org, id FROM eval_logs WHERE status = 'pending' ORDER BY received_at, seq LIMIT ?",
        [limit],
    ).fetchall()
    return [(str(o), str(i)) for o, i in rows]


def rules_rows(cur: duckdb.DuckDBPyConnection, org: str) -> list[dict[str, Any]]:
    names = [n for n, _ in TABLES["eval_rules"]]
    rows = cur.execute(
        f"SELECT {', '.join(names)} FROM eval_rules WHERE org = ? ORDER BY created_at, id", [org]
    ).fetchall()
    return [dict(zip(names, r, strict=True)) for r in rows]


def workspace_row(cur: duckdb.DuckDBPyConnection, org: str) -> dict[str, Any] | None:
    names = [n for n, _ in TABLES["eval_workspace"]]
    row = cur.execute(
        f"SELECT {', '.join(names)} FROM eval_workspace WHERE org = ?", [org]
    ).fetchone()
    return None if row is None else dict(zip(names, row, strict=True))
