"""Named reads of the logs API: the filtered, sorted, paged log list with its `summary`, the
distinct task names, and project/task listings with their log counts.

Parametrised SQL over `eval_logs` / `eval_projects` / `eval_tasks` (never built from user
input), run through `Store.query` (bounded by the query timeout).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from collector.evals import store as ls
from collector.store.writer import Store

SORTS = {
    "timestamp": "created_at",
    "projectName": "project",
    "model": "model",
    "status": "status",
    "latencyMs": "latency_ms",
    "costUsd": "cost_usd",
}
SEARCHED = ("project", "task", "model", "session_id", "subject_id", "actor_id")


@dataclass
class LogFilter:
    org: str
    pending: bool = False
    status: str | None = None
    project: str | None = None
    task: str | None = None
    session_id: str | None = None
    subject_id: str | None = None
    actor_id: str | None = None
    q: str | None = None
    tags: list[str] = field(default_factory=list)
    run_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None


def where(f: LogFilter) -> tuple[str, list[Any]]:
    parts: list[str] = ["org = ?"]
    params: list[Any] = [f.org]
    if f.pending:
        parts.append("status IN ('flagged', 'error') AND decision IS NULL")
    for column, value in (
        ("status", f.status),
        ("task", f.task),
        ("session_id", f.session_id),
        ("subject_id", f.subject_id),
        ("actor_id", f.actor_id),
        ("run_id", f.run_id),
    ):
        if value is not None:
            parts.append(f"{column} = ?")
            params.append(value)
    if f.project is not None:
        parts.append("(project = ? OR project_id = ?)")
        params += [f.project, f.project]
    if f.q:
        parts.append(
            "(" + " OR ".join(f"strpos(lower(coalesce({c}, '')), ?) > 0" for c in SEARCHED) + ")"
        )
        params += [f.q.lower()] * len(SEARCHED)
    if f.tags:
        parts.append("list_has_any(coalesce(tags, []::VARCHAR[]), ?::VARCHAR[])")
        params.append(f.tags)
    if f.start is not None:
        parts.append("created_at >= ?")
        params.append(f.start)
    if f.end is not None:
        parts.append("created_at <= ?")
        params.append(f.end)
    return " AND ".join(parts), params


def list_logs(
    store: Store, f: LogFilter, *, sort: str, direction: str, page: int, limit: int
) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
    """(a page of rows, total matching, summary over every matching log)."""
    clause, params = where(f)
    column = SORTS[sort]
    order = "ASC" if direction == "asc" else "DESC"
    rows = store.query(
        f"SELECT {', '.join(ls.LOG_NAMES)} FROM eval_logs WHERE {clause} "
        f"ORDER BY {column} {order} NULLS LAST, seq {order}, id {order} LIMIT ? OFFSET ?",
        [*params, limit, (page - 1) * limit],
    )
    (total, evaluated, passed, failures, pending) = store.query(
        "SELECT count(*), count(*) FILTER (status <> 'pending'), count(*) FILTER (status = "
        "'pass'), count(*) FILTER (status IN ('flagged', 'error')), count(*) FILTER (status IN "
        f"('flagged', 'error') AND decision IS NULL) FROM eval_logs WHERE {clause}",
        params,
    )[0]
    summary = {
        "totalRuns": int(total),
        "failuresDetected": int(failures),
        "pendingReviews": int(pending),
        "successRate": round(100.0 * passed / evaluated, 1) if evaluated else 0,
    }
    return [dict(zip(ls.LOG_NAMES, r, strict=True)) for r in rows], int(total), summary


def task_names(store: Store, org: str, project: str | None) -> list[str]:
    """Registered tasks and task names seen on logs, sorted, without duplicates."""
    if project is None:
        sql = (
            "SELECT task FROM eval_logs WHERE org = ? AND task IS NOT NULL UNION "
            "SELECT name FROM eval_tasks WHERE org = ? ORDER BY 1"
        )
        params: list[Any] = [org, org]
    else:
        sql = (
            "SELECT task FROM eval_logs WHERE org = ? AND task IS NOT NULL AND (project = ? OR "
            "project_id = ?) UNION SELECT name FROM eval_tasks WHERE org = ? AND project_id IN "
            "(SELECT id FROM eval_projects WHERE org = ? AND (name = ? OR id = ?)) ORDER BY 1"
        )
        params = [org, project, project, org, org, project, project]
    return [str(r[0]) for r in store.query(sql, params)]


def projects(store: Store, org: str, project_id: str | None = None) -> list[dict[str, Any]]:
    extra = " AND p.id = ?" if project_id is not None else ""
    rows = store.query(
        "SELECT p.id, p.name, p.icon, p.created_at, (SELECT count(*) FROM eval_logs l WHERE "
        f"l.org = p.org AND l.project_id = p.id) FROM eval_projects p WHERE p.org = ?{extra} "
        "ORDER BY p.created_at, p.name",
        [org] if project_id is None else [org, project_id],
    )
    return [
        {"id": r[0], "name": r[1], "icon": r[2], "createdAt": r[3], "executionCount": int(r[4])}
        for r in rows
    ]


def tasks(store: Store, org: str, project_id: str) -> list[dict[str, Any]]:
    rows = store.query(
        "SELECT t.id, t.name, t.project_id, t.created_at, (SELECT count(*) FROM eval_logs l "
        "WHERE l.org = t.org AND l.project_id = t.project_id AND l.task = t.name) "
        "FROM eval_tasks t WHERE t.org = ? AND t.project_id = ? ORDER BY t.created_at, t.name",
        [org, project_id],
    )
    return [
        {
            "id": r[0],
            "name": r[1],
            "projectId": r[2],
            "createdAt": r[3],
            "executionCount": int(r[4]),
        }
        for r in rows
    ]
