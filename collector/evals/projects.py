"""Projects and tasks of output evaluation: list, create, rename, merge, icon, delete (with their
logs, rules and tasks), and a project's tasks (create, delete with their logs).

Rows in `eval_projects` / `eval_tasks`; every change runs in one writer transaction, so a merge
or a cascade is all or nothing. Deleted logs' media files go with them (`on_deleted`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import duckdb
from starlette.responses import JSONResponse

from collector.api import params as pm
from collector.api import schema as sc
from collector.api.routes import Call, Operation
from collector.api.shapes import iso
from collector.errors import ApiError
from collector.evals import queries as lq
from collector.evals import store as ls
from collector.evals.auth import LogsAuth, Need, operation
from collector.store.writer import Store

MAX_ICON_CHARS = 64
NAME = sc.string(200, min_length=1, blank=False)
NAMED = sc.obj({"name": NAME}, ["name"])


class Projects:
    def __init__(
        self,
        store: Store,
        auth: LogsAuth,
        on_deleted: Callable[[str, list[str]], None],
        on_rules_changed: Callable[[str], None],
    ) -> None:
        self._store = store
        self._auth = auth
        self._on_deleted = on_deleted
        self._on_rules_changed = on_rules_changed

    def operations(self) -> list[Operation]:
        def op(method: str, path: str, handler: Any, need: Need, summary: str, **more: Any) -> Any:
            return operation(self._auth, method, path, handler, need=need, summary=summary, **more)

        one, tasks = "/api/projects/{id}", "/api/projects/{id}/tasks"
        change = sc.obj(
            {"name": NAME, "icon": sc.string(MAX_ICON_CHARS), "merge": sc.boolean()}, extra=False
        )
        return [
            op("GET", "/api/projects", self._list, "read", "List projects"),
            op("POST", "/api/projects", self._create, "admin", "Create a project", body=NAMED,
               ok=201, errors={409: "a project of that name exists"}),
            op("PATCH", one, self._patch, "admin", "Rename, merge or change a project's icon",
               body=change, errors={409: "the name is taken (send merge: true)"}),
            op("DELETE", one, self._delete, "admin",
               "Delete a project with its logs, rules and tasks"),
            op("GET", tasks, self._tasks, "read", "A project's tasks"),
            op("POST", tasks, self._create_task, "admin", "Create a task in a project",
               body=NAMED, ok=201, errors={409: "the project has a task of that name"}),
            op("DELETE", tasks, self._delete_task, "admin",
               "Delete a task and the project's logs of it",
               params=(pm.Param("taskName", sc.string(200), required=True),)),
        ]  # fmt: skip

    async def _list(self, call: Call) -> Any:
        found = await asyncio.to_thread(lq.projects, self._store, call.org)
        return [_dated(p) for p in found]

    async def _one(self, org: str, project_id: str) -> dict[str, Any]:
        found = await asyncio.to_thread(lq.projects, self._store, org, project_id)
        if not found:
            raise ApiError(404, "not_found", "Project not found")
        return _dated(found[0])

    async def _create(self, call: Call) -> Any:
        caller = call.caller
        name = _name(call.body)
        now = datetime.now(UTC)

        def write(cur: duckdb.DuckDBPyConnection) -> str:
            if ls.project_by_name(cur, caller.org, name) is not None:
                raise ApiError(409, "conflict", f"A project named {name!r} exists")
            return ls.ensure_project(cur, caller.org, name, now).id

        project_id = await self._store.acall(write)
        return JSONResponse(await self._one(caller.org, project_id), status_code=201)

    async def _patch(self, call: Call) -> Any:
        body = call.body
        problems = [
            {"field": k, "message": "is not a project field"}
            for k in sorted(set(body) - {"name", "icon", "merge"})
        ]
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not 1 <= len(name.strip()) <= 200):
            problems.append({"field": "name", "message": "must be 1-200 characters"})
        icon = body.get("icon")
        if icon is not None and (not isinstance(icon, str) or len(icon) > MAX_ICON_CHARS):
            problems.append({"field": "icon", "message": f"at most {MAX_ICON_CHARS} characters"})
        merge = body.get("merge", False)
        if not isinstance(merge, bool):
            problems.append({"field": "merge", "message": "must be true or false"})
        if merge is True and name is None:
            problems.append({"field": "name", "message": "name the project to merge into"})
        if problems:
            raise ApiError(422, "validation_error", "Invalid project change", problems)
        org, key = call.org, call.path["id"]

        def write(cur: duckdb.DuckDBPyConnection) -> str:
            project = ls.find_project(cur, org, key)
            if project is None:
                raise ApiError(404, "not_found", "Project not found")
            if icon is not None:
                cur.execute(
                    "UPDATE eval_projects SET icon = ? WHERE org = ? AND id = ?",
                    [icon or None, org, project.id],
                )
            if name is None or name.strip() == project.name:
                return project.id
            target = ls.project_by_name(cur, org, name.strip())
            if target is None:
                _rename(cur, org, project.id, name.strip())
                return project.id
            if not merge:
                raise ApiError(
                    409,
                    "conflict",
                    f"A project named {target.name!r} exists; send merge: true to merge into it",
                )
            _merge(cur, org, project.id, target)
            return target.id

        project_id = await self._store.acall(write)
        self._on_rules_changed(org)
        return await self._one(org, project_id)

    async def _delete(self, call: Call) -> Any:
        org, key = call.org, call.path["id"]

        def write(cur: duckdb.DuckDBPyConnection) -> list[str]:
            project = ls.find_project(cur, org, key)
            if project is None:
                raise ApiError(404, "not_found", "Project not found")
            ids = [
                str(r[0])
                for r in cur.execute(
                    "SELECT id FROM eval_logs WHERE org = ? AND project_id = ?", [org, project.id]
                ).fetchall()
            ]
            for table, column in (
                ("eval_logs", "project_id"),
                ("eval_rules", "project_id"),
                ("eval_tasks", "project_id"),
                ("eval_projects", "id"),
            ):
                cur.execute(
                    f"DELETE FROM {table} WHERE org = ? AND {column} = ?", [org, project.id]
                )
            return ids

        deleted = await self._store.acall(write)
        self._on_deleted(org, deleted)
        self._on_rules_changed(org)
        return {"success": True}

    async def _project_id(self, org: str, key: str) -> str:
        def read(cur: duckdb.DuckDBPyConnection) -> str | None:
            project = ls.find_project(cur, org, key)
            return None if project is None else project.id

        found = await self._store.acall(read)
        if found is None:
            raise ApiError(404, "not_found", "Project not found")
        return found

    async def _tasks(self, call: Call) -> Any:
        project_id = await self._project_id(call.org, call.path["id"])
        found = await asyncio.to_thread(lq.tasks, self._store, call.org, project_id)
        return [_dated(t) for t in found]

    async def _create_task(self, call: Call) -> Any:
        name = _name(call.body)
        org, key, now = call.org, call.path["id"], datetime.now(UTC)

        def write(cur: duckdb.DuckDBPyConnection) -> str:
            project = ls.find_project(cur, org, key)
            if project is None:
                raise ApiError(404, "not_found", "Project not found")
            if ls.task_exists(cur, org, project.id, name):
                raise ApiError(409, "conflict", f"The project has a task named {name!r}")
            ls.ensure_task(cur, org, project.id, name, now)
            return project.id

        project_id = await self._store.acall(write)
        found = await asyncio.to_thread(lq.tasks, self._store, org, project_id)
        task = next(t for t in found if t["name"] == name)
        return JSONResponse(_dated(task), status_code=201)

    async def _delete_task(self, call: Call) -> Any:
        name = call.query.query.get("taskName")
        if not name:
            raise ApiError(
                422,
                "validation_error",
                "Invalid query parameters",
                [{"field": "taskName", "message": "is required"}],
            )
        org, key = call.org, call.path["id"]

        def write(cur: duckdb.DuckDBPyConnection) -> list[str]:
            project = ls.find_project(cur, org, key)
            if project is None:
                raise ApiError(404, "not_found", "Project not found")
            where, params = "org = ? AND project_id = ?", [org, project.id]
            known = ls.task_exists(cur, org, project.id, name)
            ids = [
                str(r[0])
                for r in cur.execute(
                    f"SELECT id FROM eval_logs WHERE {where} AND task = ?", [*params, name]
                ).fetchall()
            ]
            if not known and not ids:
                raise ApiError(404, "not_found", "Task not found")
            cur.execute(f"DELETE FROM eval_logs WHERE {where} AND task = ?", [*params, name])
            cur.execute(f"DELETE FROM eval_tasks WHERE {where} AND name = ?", [*params, name])
            return ids

        deleted = await self._store.acall(write)
        self._on_deleted(org, deleted)
        return {"success": True}


def _name(body: dict[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        raise ApiError(
            422,
            "validation_error",
            "Invalid body",
            [{"field": "name", "message": "is required: 1-200 characters"}],
        )
    return name.strip()


def _dated(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "createdAt": iso(item["createdAt"]) if item["createdAt"] else None}


def _rename(cur: duckdb.DuckDBPyConnection, org: str, project_id: str, name: str) -> None:
    cur.execute(
        "UPDATE eval_projects SET name = ? WHERE org = ? AND id = ?", [name, org, project_id]
    )
    cur.execute(
        "UPDATE eval_logs SET project = ? WHERE org = ? AND project_id = ?", [name, org, project_id]
    )


def _merge(cur: duckdb.DuckDBPyConnection, org: str, source: str, target: ls.Project) -> None:
    """Logs, tasks and rules of `source` move to `target`; `source` is gone afterwards."""
    cur.execute(
        "UPDATE eval_logs SET project_id = ?, project = ? WHERE org = ? AND project_id = ?",
        [target.id, target.name, org, source],
    )
    cur.execute(
        "UPDATE eval_rules SET project_id = ? WHERE org = ? AND project_id = ?",
        [target.id, org, source],
    )
    cur.execute(
        "DELETE FROM eval_tasks WHERE org = ? AND project_id = ? AND name IN (SELECT name FROM "
        "eval_tasks WHERE org = ? AND project_id = ?)",
        [org, source, org, target.id],
    )
    cur.execute(
        "UPDATE eval_tasks SET project_id = ? WHERE org = ? AND project_id = ?",
        [target.id, org, source],
    )
    cur.execute("DELETE FROM eval_projects WHERE org = ? AND id = ?", [org, source])
