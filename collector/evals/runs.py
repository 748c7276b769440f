"""Output rules on traced runs: the "log_rules" run consumer. A rule whose `workflowName` names a
workflow evaluates each finished run's final output, as a log linked to the run (`run_id`).

The follower (`collector/runs/follow.py`) hands finished runs on the writer thread; deterministic
rules are applied here, in the same transaction that moves the watermark (with the outbox
messages of their callbacks); a run with an `llm_judge` rule is written `pending` and the logs
evaluator judges it (network I/O).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import duckdb

from collector.evals import callbacks as cb
from collector.evals import store as ls
from collector.evals.evaluate import Evaluation, rule_result, verdict_fields
from collector.evals.rules import Rule
from processors.output_rules.engine import RuleEngine

NAME = "log_rules"
SENDER = "traced-run"  # what `userId` / key_id shows for logs made from runs


def log_id(run_id: str) -> str:
    return f"run_{run_id}"[:128]


class LogRulesConsumer:
    """Idempotent per (org, run): the log id is derived from the run id, so a run re-derived
    later (a late span) finds its log and is left as first evaluated."""

    def __init__(self, engine: RuleEngine, kick: Callable[[], None] = lambda: None) -> None:
        self._engine = engine
        self._kick = kick  # the outbox's: a step queued callbacks
        self._queued = False
        self._compiled: dict[tuple[str, Any], Rule] = {}

    @property
    def name(self) -> str:
        return NAME

    def create_tables(self, cur: duckdb.DuckDBPyConnection) -> None:
        ls.create_tables(cur)

    def due(self) -> bool:
        return False

    def consume(
        self, cur: duckdb.DuckDBPyConnection, runs: list[dict[str, Any]], now_ns: int
    ) -> None:
        if not runs:
            return
        orgs = sorted({str(r["org"]) for r in runs})
        names = [n for n, _ in ls.TABLES["eval_rules"]]
        rows = cur.execute(
            f"SELECT {', '.join(names)} FROM eval_rules WHERE is_active AND workflow IS NOT NULL "
            "AND org IN (SELECT unnest(?::VARCHAR[])) ORDER BY created_at, id",
            [orgs],
        ).fetchall()
        if not rows:
            return
        rules: dict[tuple[str, str], list[Rule]] = {}
        for row in rows:
            rule = self._rule(dict(zip(names, row, strict=True)))
            rules.setdefault((rule.row["org"], rule.row["workflow"]), []).append(rule)
        now = datetime.fromtimestamp(now_ns / 1e9, UTC)
        for seq, run in enumerate(runs):
            applicable = rules.get((str(run["org"]), str(run["workflow_name"])))
            if applicable:
                self._write(cur, run, applicable, now, now_ns // 1000 + seq)

    async def after_commit(self) -> None:
        if self._queued:  # the evaluator finds pending logs by itself
            self._queued = False
            self._kick()

    def _rule(self, row: dict[str, Any]) -> Rule:
        key = (str(row["id"]), row["updated_at"])
        found = self._compiled.get(key)
        if found is None:
            try:
                found = Rule(row, self._engine.compile(row["type"], row["value"]))
            except ValueError as e:
                found = Rule(row, None, f"the stored value is invalid: {e}")
            self._compiled[key] = found
        return found

    def _write(
        self,
        cur: duckdb.DuckDBPyConnection,
        run: dict[str, Any],
        rules: list[Rule],
        now: datetime,
        seq: int,
    ) -> None:
        org, lid = str(run["org"]), log_id(str(run["run_id"]))
        if ls.get_log(cur, org, lid) is not None:
            return
        workflow = str(run["workflow_name"])
        project = ls.ensure_project(cur, org, workflow, now)
        output = run.get("output_excerpt") or ""
        row: dict[str, Any] = {
            "org": org,
            "id": lid,
            "project_id": project.id,
            "project": project.name,
            "status": "pending",
            "created_at": run.get("ended_at") or now,
            "received_at": now,
            "seq": seq,
            "key_id": SENDER,
            "output": output,
            "input_text": run.get("input_excerpt"),
            "latency_ms": run.get("duration_ms"),
            "cost_usd": run.get("cost_usd"),
            "session_id": run.get("session_id"),
            "actor_id": run.get("user_id"),
            "metadata": ls.dumps(
                {"workflow": workflow, "traceId": run.get("trace_id"), "runStatus": run["status"]}
            ),
            "tags": [],
            "attachments": "[]",
            "run_id": run["run_id"],
        }
        evaluation = self._evaluate(rules, output)
        if evaluation is not None:
            row |= verdict_fields(evaluation, now)
        ls.insert(cur, "eval_logs", row)
        if evaluation is not None and cb.enqueue(cur, row, "evaluated", now):
            self._queued = True

    def _evaluate(self, rules: list[Rule], output: str) -> Evaluation | None:
        """The verdict of deterministic rules; None when a judge must be asked (later)."""
        if any(r.compiled is not None and r.compiled.is_judge for r in rules):
            return None
        results = []
        for rule in rules:
            if rule.compiled is None:
                res = self._engine.result("error", rule.problem or "invalid", 0)
            else:
                res = rule.compiled.evaluate(output, None)
            results.append((rule, res))
        verdict = self._engine.combine([(r.name, res) for r, res in results])
        return Evaluation(
            verdict.status,
            verdict.confidence,
            verdict.explanation,
            [rule_result(r, res) for r, res in results],
        )
