"""Reading and reviewing logs over HTTP: the list (filters, search, sort, pages, `summary`),
one log, its status, task names, deletion, and human review (decision and bulk actions).

Reads go through `logs_query` / cursors; deletions and decisions run in one writer
transaction each, decisions with the callbacks and notifications they trigger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import duckdb

from collector.api import params as pm
from collector.api import schema as sc
from collector.api.routes import Call, Operation
from collector.errors import ApiError
from collector.evals import callbacks as cb
from collector.evals import queries as lq
from collector.evals import shapes as lj
from collector.evals import store as ls
from collector.evals.auth import LogsAuth, Need, operation
from collector.evals.model import DECISIONS, STATUSES
from collector.evals.workspace import Workspace
from collector.store.writer import Store

BULK_ACTIONS = {"approve": "approved", "reject": "rejected", "delete": None}
MAX_BULK = 1000


def find_log(store: Store, org: str, log_id: str) -> dict[str, Any] | None:
    cur = store.cursor()
    try:
        return ls.get_log(cur, org, log_id)
    finally:
        cur.close()


class LogViews:
    def __init__(
        self,
        store: Store,
        auth: LogsAuth,
        workspace: Workspace,
        *,
        kick: Callable[[], None],
        deleted: Callable[[str, list[str]], None],
    ) -> None:
        self._store = store
        self.auth = auth
        self.workspace = workspace
        self._kick = kick
        self._deleted = deleted

    def operations(self) -> list[Operation]:
        def op(method: str, path: str, handler: Any, need: Need, summary: str, **more: Any) -> Any:
            return operation(self.auth, method, path, handler, need=need, summary=summary, **more)

        text = sc.string(1000)
        return [
            op("GET", "/api/logs", self._list, "read", "List logs (the key is `executions`)",
               params=(
                   pm.Param("pending", sc.boolean(), "undecided flagged or error logs only"),
                   pm.Param("status", sc.enum(STATUSES)),
                   *(pm.Param(n, text) for n in ("project", "task", "sessionId", "subjectId",
                                                  "actorId", "runId", "q", "tags")),
                   pm.FROM, pm.TO,
                   pm.Param("sortBy", sc.enum(tuple(lq.SORTS))),
                   pm.Param("sortDir", sc.enum(("asc", "desc"))),
                   pm.Param("page", sc.integer(1, 10**9)),
                   pm.limit(maximum=500),
               )),
            op("PATCH", "/api/logs/bulk", self._bulk, "admin",
               "Bulk-approve, bulk-reject or bulk-delete logs",
               body=sc.obj({"ids": sc.any_of(sc.array(sc.string(128), MAX_BULK), sc.string()),
                            "action": sc.enum(tuple(BULK_ACTIONS))}, ["ids", "action"])),
            op("GET", "/api/logs/tasks", self._task_names, "read", "Distinct task names",
               params=(pm.Param("project", text),)),
            op("GET", "/api/logs/{id}", self._get, "read", "One log"),
            op("DELETE", "/api/logs/{id}", self._delete, "admin", "Delete one log"),
            op("GET", "/api/logs/{id}/status", self._status, "poll", "Poll a log's status"),
            op("PATCH", "/api/logs/{id}/decision", self._decide, "admin",
               "Approve or reject a log",
               body=sc.obj({"decision": sc.enum(DECISIONS)}, ["decision"])),
        ]  # fmt: skip

    async def _find(self, org: str, log_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(find_log, self._store, org, log_id)

    async def _found(self, call: Call) -> dict[str, Any]:
        row = await self._find(call.org, call.path["id"])
        if row is None:
            raise ApiError(404, "not_found", "Log not found")
        return row

    # -- reading ---------------------------------------------------------------------------

    async def _list(self, call: Call) -> Any:
        caller, p = call.caller, call.query
        q = p.query
        f = lq.LogFilter(
            org=caller.org,
            pending=bool(p.boolean("pending")),
            status=p.choice("status", STATUSES, None),
            project=q.get("project") or None,
            task=q.get("task") or None,
            session_id=q.get("sessionId") or None,
            subject_id=q.get("subjectId") or None,
            actor_id=q.get("actorId") or None,
            run_id=q.get("runId") or None,
            q=(q.get("q") or "").strip() or None,
            tags=[t.strip() for t in (q.get("tags") or "").split(",") if t.strip()],
            start=p.time("from"),
            end=p.until("to"),
        )
        sort = p.choice("sortBy", tuple(lq.SORTS), "timestamp") or "timestamp"
        direction = p.choice("sortDir", ("asc", "desc"), "desc") or "desc"
        limit = p.limit(default=50, maximum=500)
        page = p.number("page") or 1
        if page < 1 or page != int(page):
            p.problem("page", "must be a whole number from 1")
        p.raise_if_invalid()
        rows, total, summary = await asyncio.to_thread(
            lambda: lq.list_logs(
                self._store, f, sort=sort, direction=direction, page=int(page), limit=limit
            )
        )
        return {
            "executions": [lj.execution_json(r) for r in rows],
            "total": total,
            "page": int(page),
            "limit": limit,
            "summary": summary,
        }

    async def _get(self, call: Call) -> Any:
        return lj.log_json(await self._found(call))

    async def _status(self, call: Call) -> Any:
        return lj.status_json(await self._found(call))

    async def _task_names(self, call: Call) -> Any:
        project = call.query.query.get("project") or None
        return await asyncio.to_thread(lq.task_names, self._store, call.org, project)

    # -- deleting and review ---------------------------------------------------------------

    async def _delete(self, call: Call) -> Any:
        caller, log_id = call.caller, call.path["id"]
        count = await self._store.acall(lambda cur: _delete(cur, caller.org, [log_id]))
        if not count:
            raise ApiError(404, "not_found", "Log not found")
        self._deleted(caller.org, [log_id])
        return {"ok": True}

    async def _decide(self, call: Call) -> Any:
        caller, body = call.caller, call.body
        decision = body.get("decision")
        if decision not in DECISIONS:
            raise ApiError(
                422,
                "validation_error",
                "Invalid decision",
                [{"field": "decision", "message": "must be approved or rejected"}],
            )
        count = await self.decide(caller.org, [call.path["id"]], str(decision), caller.label)
        if not count:
            raise ApiError(404, "not_found", "Log not found")
        return {"ok": True, "decidedBy": caller.label}

    async def _bulk(self, call: Call) -> Any:
        caller, body = call.caller, call.body
        raw, action = body.get("ids"), body.get("action")
        if isinstance(raw, str):  # "a,b,c" from a form field
            raw = [i.strip() for i in raw.split(",") if i.strip()]
        problems = []
        if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
            problems.append({"field": "ids", "message": "must be an array of log ids"})
        elif len(raw) > MAX_BULK:
            problems.append({"field": "ids", "message": f"at most {MAX_BULK} ids"})
        if not isinstance(action, str) or action not in BULK_ACTIONS:
            problems.append({"field": "action", "message": "must be approve, reject or delete"})
        if problems:
            raise ApiError(422, "validation_error", "Invalid bulk action", problems)
        ids = list(dict.fromkeys(raw or []))
        org = caller.org
        decision = BULK_ACTIONS[str(action)]
        if decision is None:
            count = await self._store.acall(lambda cur: _delete(cur, org, ids))
            self._deleted(org, ids)
        else:
            count = await self.decide(org, ids, decision, caller.label)
        return {"ok": True, "count": count}

    async def decide(self, org: str, ids: list[str], decision: str, by: str) -> int:
        """Record a human decision on `org`'s logs `ids` (unknown ids are skipped), with the
        callbacks and notifications it triggers, in one transaction; how many were decided.
        `by` is what `decidedBy` shows. The API's decision routes and the web UI call this."""
        now = datetime.now(UTC)
        ws = await self.workspace.load(org)
        count = await self._store.acall(
            lambda cur: _decide(cur, org, ids, decision=decision, by=by, now=now, ws=ws)
        )
        self._kick()
        return count


def _delete(cur: duckdb.DuckDBPyConnection, org: str, ids: list[str]) -> int:
    if not ids:
        return 0
    found = cur.execute(
        "SELECT count(*) FROM eval_logs WHERE org = ? AND id IN (SELECT unnest(?::VARCHAR[]))",
        [org, ids],
    ).fetchone()
    cur.execute(
        "DELETE FROM eval_logs WHERE org = ? AND id IN (SELECT unnest(?::VARCHAR[]))", [org, ids]
    )
    return int(found[0]) if found else 0


def _decide(
    cur: duckdb.DuckDBPyConnection,
    org: str,
    ids: list[str],
    *,
    decision: str,
    by: str,
    now: datetime,
    ws: tuple[dict[str, Any], dict[str, str]],
) -> int:
    count = 0
    for log_id in ids:
        row = ls.get_log(cur, org, log_id)
        if row is None:
            continue
        cur.execute(
            "UPDATE eval_logs SET decision = ?, decided_by = ?, decided_at = ? "
            "WHERE org = ? AND id = ?",
            [decision, by, now, org, log_id],
        )
        decided = {**row, "decision": decision, "decided_by": by}
        cb.enqueue(cur, decided, "decision", now, cb.deliveries(decided, "decision", *ws))
        count += 1
    return count
