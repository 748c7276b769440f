"""Rules over HTTP: list, create, get, update and delete rules, and POST /api/rules/evaluate
(one rule against one output, nothing stored).

Rows in `eval_rules` (validated by `logs_rules.parse_rule_body`); every write drops the org's
compiled-rule cache so the next log is evaluated with the change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb
from starlette.responses import JSONResponse

from collector.api import schema as sc
from collector.api.routes import Call, Operation
from collector.errors import ApiError
from collector.evals import store as ls
from collector.evals.auth import LogsAuth, Need, operation
from collector.evals.evaluate import Evaluator
from collector.evals.request import MAX_OUTPUT_CHARS
from collector.evals.rules import MAX_RULES, Rule, RuleCache, parse_rule_body, rule_json
from collector.store.writer import Store
from processors.output_rules.engine import RuleEngine

RULE_COLUMNS = [n for n, _ in ls.TABLES["eval_rules"]]
RULE_BODY = sc.obj(
    {
        "name": sc.string(200),
        "type": sc.string(64, description="keyword_required, regex_match, llm_judge, ..."),
        "description": sc.string(2000),
        "value": {"description": "the rule's value: text, a number or an object by type"},
        "isActive": sc.boolean(),
        "projectId": sc.string(200),
        "projectName": sc.string(200, min_length=1, blank=False),
        "taskName": sc.string(200),
        "workflowName": sc.string(200),
        "llmJudgeProvider": sc.string(32),
        "llmJudgeModel": sc.string(200),
    },
    extra=False,
)
EVALUATE_BODY = sc.obj(
    {
        "output": sc.string(MAX_OUTPUT_CHARS),
        "confidence": sc.number(0, 1),
        "rule": sc.any_of(sc.obj({}), sc.string(200), description="a rule object or a rule id"),
    },
    ["output", "rule"],
)


class RulesApi:
    def __init__(
        self,
        store: Store,
        auth: LogsAuth,
        engine: RuleEngine,
        cache: RuleCache,
        evaluator: Evaluator,
    ) -> None:
        self._store = store
        self._auth = auth
        self._engine = engine
        self._cache = cache
        self._evaluator = evaluator

    def operations(self) -> list[Operation]:
        def op(method: str, path: str, handler: Any, need: Need, summary: str, **more: Any) -> Any:
            return operation(self._auth, method, path, handler, need=need, summary=summary, **more)

        one = "/api/rules/{id}"
        return [
            op("POST", "/api/rules/evaluate", self._evaluate, "send",
               "Evaluate one rule against an output (nothing stored)", body=EVALUATE_BODY),
            op("GET", "/api/rules", self._list, "read", "List rules"),
            op("POST", "/api/rules", self._create, "admin", "Create a rule", body=RULE_BODY,
               ok=201),
            op("GET", one, self._get, "read", "One rule"),
            op("PATCH", one, self._update, "admin", "Update a rule", body=RULE_BODY),
            op("DELETE", one, self._delete, "admin", "Delete a rule"),
        ]  # fmt: skip

    async def _list(self, call: Call) -> Any:
        org = call.org
        return await self._store.acall(lambda cur: _rules(cur, org, None))

    async def _get(self, call: Call) -> Any:
        org, rule_id = call.org, call.path["id"]
        found = await self._store.acall(lambda cur: _rules(cur, org, rule_id))
        if not found:
            raise ApiError(404, "not_found", "Rule not found")
        return found[0]

    async def _create(self, call: Call) -> Any:
        caller = call.caller
        fields, project_name = parse_rule_body(call.body, self._engine, None)
        org, now = caller.org, datetime.now(UTC)

        def write(cur: duckdb.DuckDBPyConnection) -> str:
            count = cur.execute("SELECT count(*) FROM eval_rules WHERE org = ?", [org]).fetchone()
            if count is not None and count[0] >= MAX_RULES:
                raise ApiError(422, "validation_error", f"At most {MAX_RULES} rules per workspace")
            _scope(cur, org, fields, project_name, now)
            row = {"is_active": True, **fields, "org": org, "id": ls.new_id()}
            row |= {"created_at": now, "updated_at": now}
            ls.insert(cur, "eval_rules", row)
            return str(row["id"])

        rule_id = await self._store.acall(write)
        self._cache.invalidate(org)
        found = await self._store.acall(lambda cur: _rules(cur, org, rule_id))
        return JSONResponse(found[0], status_code=201)

    async def _update(self, call: Call) -> Any:
        body = call.body
        org, rule_id, now = call.org, call.path["id"], datetime.now(UTC)

        def write(cur: duckdb.DuckDBPyConnection) -> None:
            current = _row(cur, org, rule_id)
            if current is None:
                raise ApiError(404, "not_found", "Rule not found")
            fields, project_name = parse_rule_body(body, self._engine, current)
            _scope(cur, org, fields, project_name, now)
            sets = {**fields, "updated_at": now}
            assignments = ", ".join(f"{k} = ?" for k in sets)
            cur.execute(
                f"UPDATE eval_rules SET {assignments} WHERE org = ? AND id = ?",
                [*sets.values(), org, rule_id],
            )

        await self._store.acall(write)
        self._cache.invalidate(org)
        return {"ok": True}

    async def _delete(self, call: Call) -> Any:
        org, rule_id = call.org, call.path["id"]

        def write(cur: duckdb.DuckDBPyConnection) -> bool:
            if _row(cur, org, rule_id) is None:
                return False
            cur.execute("DELETE FROM eval_rules WHERE org = ? AND id = ?", [org, rule_id])
            return True

        if not await self._store.acall(write):
            raise ApiError(404, "not_found", "Rule not found")
        self._cache.invalidate(org)
        return {"ok": True}

    async def _evaluate(self, call: Call) -> Any:
        caller, body = call.caller, call.body
        output, raw = body.get("output"), body.get("rule")
        problems = []
        if not isinstance(output, str) or len(output) > MAX_OUTPUT_CHARS:
            problems.append({"field": "output", "message": "is required: a string up to 50,000"})
        confidence = body.get("confidence")
        if confidence is not None and (
            isinstance(confidence, bool)
            or not isinstance(confidence, int | float)
            or not 0 <= confidence <= 1
        ):
            problems.append({"field": "confidence", "message": "must be a number from 0 to 1"})
        if not isinstance(raw, dict | str):
            problems.append({"field": "rule", "message": "must be a rule object or a rule id"})
        if problems:
            raise ApiError(422, "validation_error", "Invalid evaluation", problems)
        org = caller.org
        if isinstance(raw, str):  # a stored rule, by id
            stored = await self._store.acall(lambda cur: _row(cur, org, raw))
            if stored is None:
                raise ApiError(404, "not_found", "Rule not found")
            row = stored
        else:
            assert isinstance(raw, dict)
            fields, _ = parse_rule_body(
                {k: v for k, v in raw.items() if k not in ("id", "scope")},
                self._engine,
                {"name": raw.get("name") or "rule"},
            )
            row = {c: None for c in RULE_COLUMNS} | {"is_active": True, "name": "rule"} | fields
            for name in ("type", "value"):
                if row.get(name) is None:
                    raise ApiError(
                        422,
                        "validation_error",
                        "Invalid evaluation",
                        [{"field": f"rule.{name}", "message": "is required"}],
                    )
        rule = Rule(row, self._engine.compile(row["type"], row["value"]))
        ev = await self._evaluator.apply(org, [rule], str(output), confidence)
        applied = [{k: v for k, v in r.items() if k != "triggered"} for r in ev.rules]
        return {
            "verdict": ev.status,
            "confidenceScore": ev.confidence,
            "explanation": ev.explanation,
            "status": ev.status,
            "appliedRules": applied,
        }


def _row(cur: duckdb.DuckDBPyConnection, org: str, rule_id: str) -> dict[str, Any] | None:
    found = cur.execute(
        f"SELECT {', '.join(RULE_COLUMNS)} FROM eval_rules WHERE org = ? AND id = ?",
        [org, rule_id],
    ).fetchone()
    return None if found is None else dict(zip(RULE_COLUMNS, found, strict=True))


def _rules(cur: duckdb.DuckDBPyConnection, org: str, rule_id: str | None) -> list[dict[str, Any]]:
    names = {str(r[0]): str(r[1]) for r in cur.execute(
        "SELECT id, name FROM eval_projects WHERE org = ?", [org]
    ).fetchall()}  # fmt: skip
    rows = ls.rules_rows(cur, org)
    return [
        rule_json(r, names.get(r["project_id"] or ""))
        for r in rows
        if rule_id is None or r["id"] == rule_id
    ]


def _scope(
    cur: duckdb.DuckDBPyConnection,
    org: str,
    fields: dict[str, Any],
    project_name: str | None,
    now: datetime,
) -> None:
    """Resolve `projectName` (created on first use) / check `projectId` belongs to the org."""
    if project_name is not None:
        fields["project_id"] = ls.ensure_project(cur, org, project_name.strip(), now).id
    elif fields.get("project_id") is not None:
        project = ls.find_project(cur, org, fields["project_id"])
        if project is not None:
            fields["project_id"] = project.id
        else:
            raise ApiError(
                422,
                "validation_error",
                "Invalid rule",
                [{"field": "projectId", "message": "no such project in this workspace"}],
            )
