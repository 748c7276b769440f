"""Rules of output evaluation: the JSON of /api/rules, validation of a create/update body, the
scope a rule covers, and a per-org cache of compiled active rules for the evaluator.

Rows live in `eval_rules` (logs_store); values are compiled by the registry's rule engine, so a
bad value is a 422 naming what to write instead, and a stored rule is compiled once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from collector.api.shapes import iso
from collector.errors import ApiError
from collector.evals import store as ls
from collector.store.writer import Store
from processors.output_rules.engine import CompiledRule, RuleEngine

CACHE_TTL_S = 5.0  # another node's rule change is seen within this long
MAX_RULES = 500
FIELDS = {
    "name": "name",
    "type": "type",
    "description": "description",
    "value": "value",
    "isActive": "is_active",
    "projectId": "project_id",
    "taskName": "task_name",
    "workflowName": "workflow",
    "llmJudgeProvider": "judge_provider",
    "llmJudgeModel": "judge_model",
}


@dataclass(frozen=True)
class Rule:
    row: dict[str, Any]
    compiled: CompiledRule | None
    problem: str | None = None  # why a stored value no longer compiles (evaluates as error)

    @property
    def id(self) -> str:
        return str(self.row["id"] or "")

    @property
    def name(self) -> str:
        return str(self.row["name"])

    @property
    def scope(self) -> str:
        if self.row["workflow"]:
            return "workflow"
        if self.row["task_name"]:
            return "task"
        return "project" if self.row["project_id"] else "global"

    def covers_workflow(self, workflow: str | None) -> bool:
        """A rule on traced runs: active and naming this run's workflow."""
        return (
            bool(self.row["is_active"])
            and workflow is not None
            and self.row["workflow"] == workflow
        )

    def covers(self, project_id: str | None, task: str | None) -> bool:
        r = self.row
        if not r["is_active"] or r["workflow"]:
            return False
        if r["project_id"] is not None and r["project_id"] != project_id:
            return False
        return r["task_name"] is None or r["task_name"] == task


def rule_json(row: dict[str, Any], project_name: str | None) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "type": row["type"],
        "description": row["description"],
        "value": row["value"],
        "isActive": bool(row["is_active"]),
        "projectId": row["project_id"],
        "projectName": project_name,
        "taskName": row["task_name"],
        "workflowName": row["workflow"],
        "llmJudgeProvider": row["judge_provider"],
        "llmJudgeModel": row["judge_model"],
        "scope": Rule(row, None).scope,
        "createdAt": iso(row["created_at"]) if row["created_at"] else None,
        "updatedAt": iso(row["updated_at"]) if row["updated_at"] else None,
    }


def parse_rule_body(
    body: dict[str, Any], engine: RuleEngine, current: dict[str, Any] | None
) -> tuple[dict[str, Any], str | None]:
    """The row fields a create (current None) or update sets, and a `projectName` to resolve.

    Every problem is one `{"field", "message"}` of a single 422."""
    problems: list[dict[str, str]] = []
    known = {*FIELDS, "projectName"}
    for name in sorted(set(body) - known):
        problems.append({"field": name, "message": "is not a rule field"})
    out: dict[str, Any] = {}
    for name, column in FIELDS.items():
        if name not in body:
            continue
        value = body[name]
        if name == "isActive":
            if not isinstance(value, bool):
                problems.append({"field": name, "message": "must be true or false"})
            out[column] = value
            continue
        if value is not None and not isinstance(value, str):
            problems.append({"field": name, "message": "must be a string"})
            continue
        out[column] = value.strip() if isinstance(value, str) and name != "value" else value
        if out[column] == "" and name not in ("value", "name"):
            out[column] = None
    project_name = body.get("projectName")
    if project_name is not None and (not isinstance(project_name, str) or not project_name):
        problems.append({"field": "projectName", "message": "must be a non-empty string"})
        project_name = None
    merged = {**(current or {}), **out}
    for name in ("name", "type", "value") if current is None else ():
        if merged.get(FIELDS[name]) is None:
            problems.append({"field": name, "message": "is required"})
    if merged.get("name") is not None and not 1 <= len(str(merged["name"]).strip()) <= 200:
        problems.append({"field": "name", "message": "must be 1-200 characters"})
    rule_type = merged.get("type")
    if rule_type is not None and rule_type not in engine.types:
        problems.append({"field": "type", "message": f"must be one of {', '.join(engine.types)}"})
    elif rule_type is not None and merged.get("value") is not None:
        try:
            engine.compile(rule_type, merged["value"])
        except ValueError as e:
            problems.append({"field": "value", "message": f"invalid {rule_type} value: {e}"})
    provider = merged.get("judge_provider")
    if provider is not None and provider not in engine.providers:
        problems.append(
            {
                "field": "llmJudgeProvider",
                "message": f"must be one of {', '.join(engine.providers)}",
            }
        )
    if problems:
        raise ApiError(422, "validation_error", "Invalid rule", problems)
    return out, project_name


class RuleCache:
    """Each org's rules, compiled; dropped on every write here and refreshed after a TTL."""

    def __init__(self, store: Store, engine: RuleEngine) -> None:
        self._store = store
        self._engine = engine
        self._cache: dict[str, tuple[float, list[Rule]]] = {}

    def invalidate(self, org: str) -> None:
        self._cache.pop(org, None)

    async def rules(self, org: str) -> list[Rule]:
        cached = self._cache.get(org)
        if cached is not None and time.monotonic() - cached[0] < CACHE_TTL_S:
            return cached[1]
        rows = await asyncio.to_thread(self._load, org)
        rules = []
        for row in rows:
            try:
                rules.append(Rule(row, self._engine.compile(row["type"], row["value"])))
            except ValueError as e:  # validated on write; stored by an older version?
                rules.append(Rule(row, None, f"the stored value is invalid: {e}"))
        self._cache[org] = (time.monotonic(), rules)
        return rules

    def _load(self, org: str) -> list[dict[str, Any]]:
        cur = self._store.cursor()
        try:
            return ls.rules_rows(cur, org)
        finally:
            cur.close()
