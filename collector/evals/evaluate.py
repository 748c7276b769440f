"""Evaluating logs: the rules that cover a log, each applied (the LLM judge over the network),
the verdict, and the background worker that evaluates pending logs (after a crash too).

`logs_api` calls `evaluate` inline for `sync: true` and `submit` for async logs; the worker
reads pending rows from `eval_logs`, writes the verdict (and redacts what is stored) in one
transaction with the outbox rows of its callbacks and notifications, then kicks the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from collector.evals import callbacks as cb
from collector.evals import store as ls
from collector.evals.rules import Rule, RuleCache
from collector.store.writer import Store
from processors.output_rules.engine import RuleEngine, RuleResult
from processors.redact.rules import Redactor

log = logging.getLogger(__name__)
IDLE_SWEEP_S = 60.0
SWEEP_S = 1.0  # how often pending logs nobody queued (traced runs, another node's) are found


@dataclass(frozen=True)
class JudgeSettings:
    """What the workspace settings say about judges: the default provider, keys and models."""

    default_provider: str | None = None
    keys: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)


@dataclass
class Evaluation:
    status: str
    confidence: float
    explanation: str
    rules: list[dict[str, Any]]


class Evaluator:
    def __init__(
        self,
        store: Store,
        engine: RuleEngine,
        rules: RuleCache,
        *,
        judge: Any | None,
        judge_settings: Callable[[str], Awaitable[JudgeSettings]],
        workspace: Callable[[str], Awaitable[tuple[dict[str, Any], dict[str, str]]]],
        judge_timeout_s: float,
        redactor: Redactor | None = None,
        on_commit: Callable[[], None] = lambda: None,
        batch: int = 100,
        concurrency: int = 4,
    ) -> None:
        self._store = store
        self._engine = engine
        self.rules = rules
        self._judge = judge
        self._judge_settings = judge_settings
        self._workspace = workspace
        self._judge_timeout_s = judge_timeout_s
        self._redactor = redactor
        self._on_commit = on_commit
        self._batch = batch
        self._limit = asyncio.Semaphore(concurrency)
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._queued: set[tuple[str, str]] = set()
        self._running = False
        self.evaluated = 0

    # -- one log ---------------------------------------------------------------------------

    async def evaluate(
        self,
        org: str,
        project_id: str | None,
        task: str | None,
        output: str,
        confidence: float | None,
        *,
        input_text: str | None = None,
    ) -> Evaluation:
        covering = [r for r in await self.rules.rules(org) if r.covers(project_id, task)]
        return await self.apply(org, covering, output, confidence, input_text)

    async def apply(
        self,
        org: str,
        rules: list[Rule],
        output: str,
        confidence: float | None,
        input_text: str | None = None,
    ) -> Evaluation:
        results: list[tuple[Rule, RuleResult]] = []
        judged: list[tuple[Rule, Awaitable[RuleResult]]] = []
        for rule in rules:
            if rule.compiled is None:
                results.append((rule, self._engine.result("error", rule.problem or "invalid", 0)))
            elif rule.compiled.is_judge:
                judged.append((rule, self._judge_one(org, rule, output, input_text)))
            else:
                results.append((rule, rule.compiled.evaluate(output, confidence)))
        if judged:
            verdicts = await asyncio.gather(*(j for _, j in judged))
            results += [(r, v) for (r, _), v in zip(judged, verdicts, strict=True)]
        order = {id(r): i for i, r in enumerate(rules)}
        results.sort(key=lambda x: order[id(x[0])])
        verdict = self._engine.combine([(r.name, res) for r, res in results])
        return Evaluation(
            verdict.status,
            verdict.confidence,
            verdict.explanation,
            [rule_result(r, res) for r, res in results],
        )

    async def _judge_one(
        self, org: str, rule: Rule, output: str, input_text: str | None
    ) -> RuleResult:
        settings = await self._judge_settings(org)
        provider = rule.row["judge_provider"] or settings.default_provider
        if provider is None:
            provider = next((p for p in self._engine.providers if p in settings.keys), None)
        if self._judge is None:
            return self._engine.result("error", "no LLM judge is configured on this server", 0)
        if provider is None or provider not in settings.keys:
            name = provider or "any provider"
            return self._engine.result(
                "error", f"no API key for {name} in the workspace settings", 0
            )
        model = rule.row["judge_model"] or settings.models.get(provider)
        try:
            async with self._limit:
                v = await asyncio.wait_for(
                    self._judge.evaluate(
                        provider=provider,
                        api_key=settings.keys[provider],
                        model=model,
                        criterion=rule.row["value"],
                        output=output,
                        input=input_text,
                    ),
                    self._judge_timeout_s,
                )
        except TimeoutError:
            return self._engine.result("error", f"the {provider} judge timed out", 0)
        except Exception as e:  # JudgeError: down, refused, unparseable — never a silent pass
            return self._engine.result("error", f"the {provider} judge failed: {e}", 0)
        outcome = "passed" if v.passed else "triggered"
        return self._engine.result(outcome, str(v.explanation), float(v.confidence))

    def stored(self, row: dict[str, Any]) -> dict[str, Any]:
        """The fields of `row` as they are stored once evaluated: redacted when configured."""
        r = self._redactor
        if r is None:
            return {}
        out: dict[str, Any] = {"output": r.text(row["output"] or "", field="output")}
        if row.get("input_text") is not None:
            out["input_text"] = r.text(row["input_text"], field="inputText")
        if row.get("input") is not None:
            out["input"] = ls.dumps(r.value(ls.loads(row["input"]), field="input"))
        return out

    # -- the background worker -------------------------------------------------------------

    def submit(self, org: str, log_id: str) -> None:
        # Only while this node runs the evaluator: on a shared store another node may hold it,
        # and its sweep finds the log pending in the store.
        if self._running and (org, log_id) not in self._queued:
            self._queued.add((org, log_id))
            self._queue.put_nowait((org, log_id))

    async def run(self, stop: asyncio.Event) -> None:
        self._running = True
        sweeper = asyncio.create_task(self._sweep(stop))
        try:
            while not stop.is_set():
                getter = asyncio.ensure_future(self._queue.get())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not getter.done():
                    getter.cancel()
                    break
                batch = [getter.result()]
                while len(batch) < self._batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                try:
                    await self._process(batch)
                except Exception:
                    log.exception("evaluating %d logs failed; they stay pending", len(batch))
                    await asyncio.sleep(1.0)
                finally:
                    self._queued.difference_update(batch)
        finally:
            self._running = False
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    async def _sweep(self, stop: asyncio.Event) -> None:
        """Find logs pending but not queued here (another node's, a traced run's): after a
        commit (at most every `SWEEP_S`), and every `IDLE_SWEEP_S` regardless."""
        commits = self._store.commits.event()
        while not stop.is_set():
            commits.clear()
            try:
                for org, log_id in await asyncio.to_thread(self._pending):
                    self.submit(org, log_id)
            except Exception:
                log.exception("could not list pending logs")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SWEEP_S)
            if stop.is_set():
                break
            committed = asyncio.ensure_future(commits.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait(
                (committed, stopped), timeout=IDLE_SWEEP_S, return_when=asyncio.FIRST_COMPLETED
            )
            committed.cancel()
            stopped.cancel()

    def _pending(self) -> list[tuple[str, str]]:
        cur = self._store.cursor()
        try:
            return ls.pending_logs(cur, 10_000)
        finally:
            cur.close()

    async def _process(self, batch: list[tuple[str, str]]) -> None:
        rows = await asyncio.to_thread(self._load, batch)

        async def one(row: dict[str, Any]) -> tuple[dict[str, Any], Evaluation]:
            if row["run_id"] is not None:  # a traced run's output: its workflow's rules
                workflow = (ls.loads(row["metadata"]) or {}).get("workflow")
                rules = [
                    r for r in await self.rules.rules(row["org"]) if r.covers_workflow(workflow)
                ]
                return row, await self.apply(row["org"], rules, row["output"] or "", None)
            ev = await self.evaluate(
                row["org"],
                row["project_id"],
                row["task"],
                row["output"] or "",
                row["confidence"],
                input_text=row["input_text"],
            )
            return row, ev

        done = await asyncio.gather(*(one(r) for r in rows))
        now = datetime.now(UTC)
        updates = []
        for row, ev in done:
            sets = {**self.stored(row), **verdict_fields(ev, now)}
            settings, secrets = await self._workspace(row["org"])
            kinds = cb.deliveries({**row, **sets}, "evaluated", settings, secrets)
            updates.append(({**row, **sets}, kinds))
        if updates:
            self.evaluated += await self._store.acall(lambda cur: finish(cur, updates, now))
        self._on_commit()

    def _load(self, batch: list[tuple[str, str]]) -> list[dict[str, Any]]:
        cur = self._store.cursor()
        try:
            found = [ls.get_log(cur, org, log_id) for org, log_id in batch]
        finally:
            cur.close()
        return [r for r in found if r is not None and r["status"] == "pending"]


FINISHED = ("status", "rules", "confidence_score", "explanation", "evaluated_at", "output",
            "input", "input_text")  # fmt: skip


def finish(
    cur: duckdb.DuckDBPyConnection,
    updates: list[tuple[dict[str, Any], cb.Kinds]],
    now: datetime,
) -> int:
    """Write verdicts of pending logs in one statement (a log evaluated meanwhile is left
    alone) and queue their callbacks and notifications in the same transaction."""
    ids = [row["id"] for row, _ in updates]
    still = {
        (str(o), str(i))
        for o, i in cur.execute(
            "SELECT org, id FROM eval_logs WHERE status = 'pending' AND id IN "
            "(SELECT unnest(?::VARCHAR[]))",
            [ids],
        ).fetchall()
    }
    todo = [(row, kinds) for row, kinds in updates if (row["org"], row["id"]) in still]
    if not todo:
        return 0
    names = ("org", "id", *FINISHED)
    table = pa.Table.from_pylist(
        [{n: row.get(n) for n in names} for row, _ in todo],
        pa.schema([(n, ls.LOG_SCHEMA.field(n).type) for n in names]),
    )
    assignments = ", ".join(
        f"{n} = _done.{n}" + ("::JSON" if n in ("rules", "input") else "") for n in FINISHED
    )
    cur.register("_done", table)
    try:
        cur.execute(
            f"UPDATE eval_logs SET {assignments} FROM _done WHERE eval_logs.org = _done.org "
            "AND eval_logs.id = _done.id AND eval_logs.status = 'pending'"
        )
    finally:
        cur.unregister("_done")
    for row, kinds in todo:
        cb.enqueue(cur, row, "evaluated", now, kinds)
    return len(todo)


def verdict_fields(ev: Evaluation, now: datetime) -> dict[str, Any]:
    return {
        "status": ev.status,
        "rules": ls.dumps(ev.rules),
        "confidence_score": ev.confidence,
        "explanation": ev.explanation,
        "evaluated_at": now,
    }


def rule_result(rule: Rule, res: RuleResult, scope: str | None = None) -> dict[str, Any]:
    return {
        "ruleId": rule.row["id"],
        "ruleName": rule.name,
        "ruleType": rule.row["type"],
        "ruleValue": rule.row["value"],
        "scope": scope or rule.scope,
        "outcome": res.outcome,
        "triggered": res.outcome == "triggered",
        "explanation": res.explanation,
        "confidence": res.confidence,
    }
