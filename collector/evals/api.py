"""Output evaluation over HTTP (the Tracira logs API doc): POST /api/logs, and the assembly of the
whole feature (reads and review in `logs_review`, rules, projects, settings, media).

`EvalsApi` owns the parts (auth, rules, evaluator, workspace, projects, media) and the evaluator's
background task, which the service starts and stops; deliveries go through the service's outbox
(the evals topic, `collector/evals/callbacks.py`). Logs are committed before answering:
async ones as `pending` (the evaluator picks them up), sync ones with their verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from starlette.routing import BaseRoute

from collector.api.apis import EVALS
from collector.api.ratelimit import LimiterFactory, local_limiters
from collector.api.routes import Call, Operation, PerKey, routes
from collector.auth.keys import Authenticator
from collector.cluster.claims import Claims
from collector.errors import ApiError
from collector.evals import callbacks as cb
from collector.evals import shapes as lj
from collector.evals import store as ls
from collector.evals.auth import LogsAuth, Tracira
from collector.evals.config import EvalsConfig
from collector.evals.evaluate import Evaluator, verdict_fields
from collector.evals.media import Media
from collector.evals.projects import Projects
from collector.evals.request import LOG_BODY, LogInput, parse_log
from collector.evals.review import LogViews, find_log
from collector.evals.rules import RuleCache
from collector.evals.rules_api import RulesApi
from collector.evals.workspace import Workspace
from collector.model import Rows
from collector.outbound import client as outbound
from collector.outbound.outbox import Outbox
from collector.secretbox import SecretBox
from collector.store.sequence import Sequencer
from collector.store.writer import Store
from processors.output_rules.engine import RuleEngine
from processors.redact.rules import Redactor

MIB = 1024 * 1024
TOO_MANY = "Too many requests. Please slow down and try again shortly."
KNOWN_TTL_S = 60.0  # another node's project rename or delete is seen within this long


class EvalsApi:
    def __init__(
        self,
        store: Store,
        auth: Authenticator,
        engine: RuleEngine,
        *,
        config: EvalsConfig,
        box: SecretBox,
        policy: outbound.OutboundPolicy,
        media_root: Path,
        outbox: Outbox,
        judge: Any | None = None,
        build_channel: Callable[[Mapping[str, Any]], Any] | None = None,
        redactor: Redactor | None = None,
        limiters: LimiterFactory = local_limiters,
        claims: Claims | None = None,
    ) -> None:
        """`limiters` makes the rate limit of `POST /api/logs` and `claims` guards callers'
        log ids (a shared store's are global; by default this process's own)."""
        self._store = store
        self._claims = claims
        self._config = config
        self._policy = policy
        self._redactor = redactor
        self._judge = judge
        self.auth = LogsAuth(store, auth, config.rotations_per_hour)
        self.workspace = Workspace(store, self.auth, box, policy)
        self.rules = RuleCache(store, engine)
        self.outbox = outbox
        outbox.register(cb.Callbacks(policy, self.workspace.load, build_channel, config))
        self.evaluator = Evaluator(
            store,
            engine,
            self.rules,
            judge=judge,
            judge_settings=self.workspace.judge_settings,
            workspace=self.workspace.load,
            judge_timeout_s=config.judge_timeout_s,
            redactor=redactor,
            on_commit=self.outbox.kick,
            batch=config.worker_batch,
            concurrency=config.worker_concurrency,
        )
        self.media = Media(
            media_root, self.auth, policy, config.max_attachment_mib * MIB, config.media_url_ttl_s
        )
        self.projects = Projects(store, self.auth, self._deleted, self._changed)
        self.views = LogViews(
            store, self.auth, self.workspace, kick=self.outbox.kick, deleted=self._deleted
        )
        self.rules_api = RulesApi(store, self.auth, engine, self.rules, self.evaluator)
        self._limiter = limiters("logs", config.rate_limit_per_minute, 60.0)
        self._seq = Sequencer()
        self._known: dict[tuple[str, str, str | None], tuple[float, str]] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Tables, the workspace tokens and the media root (blocking: run in a thread)."""
        self._store.call(ls.create_tables)
        self.auth.load()
        self.media.open()

    async def run(self, stop: asyncio.Event) -> None:
        """The evaluator until `stop` (the service runs this as one leased job: on a shared
        store one node evaluates for all; deliveries go through the outbox's own job)."""
        await self.evaluator.run(stop)

    async def start(self) -> None:
        """The evaluator (which first picks up logs left pending)."""
        self._stop.clear()
        self._tasks = [asyncio.create_task(self.evaluator.run(self._stop))]

    async def stop(self) -> None:
        """Stop it; a log still pending stays pending and is evaluated on the next start."""
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._judge is not None:
            await self._judge.aclose()

    def routes(self) -> list[BaseRoute]:
        return routes(self.operations())

    def operations(self) -> list[Operation]:
        post = Operation(
            EVALS,
            "POST",
            "/api/logs",
            self._post,
            "Submit an AI output for evaluation (sync: true answers the verdict)",
            Tracira(self.auth, "send"),
            body=LOG_BODY,
            parse=parse_log,
            body_limit=self._config.max_body_mib * MIB,
            limit=PerKey(self._limiter, TOO_MANY, key_of=lambda c: str(c.token), retry_after=60),
        )
        return [
            post,
            *self.views.operations(),
            *self.rules_api.operations(),
            *self.projects.operations(),
            *self.workspace.operations(),
            *self.media.operations(),
        ]

    # -- POST /api/logs --------------------------------------------------------------------

    async def _post(self, call: Call) -> Any:
        caller, log = call.caller, call.body
        if len(log.attachments) > self._config.max_attachments:
            raise ApiError(
                422,
                "validation_error",
                "Invalid log",
                [{"field": "attachments", "message": f"at most {self._config.max_attachments}"}],
            )
        if log.callback_url is not None:
            try:
                await outbound.check_destination(log.callback_url, self._policy)
            except outbound.OutboundRefused as e:
                raise ApiError(
                    422,
                    "validation_error",
                    "Invalid log",
                    [{"field": "callbackUrl", "message": str(e)}],
                ) from e
        org = caller.org
        if log.id is not None:
            existing = await asyncio.to_thread(find_log, self._store, org, log.id)
            if existing is not None:
                return lj.post_json(existing, inline=True)
            if self._claims is not None:
                return await self._create_claimed(caller, log, log.id)
        return await self._create(caller, log)

    async def _create_claimed(self, caller: Any, log: Any, log_id: str) -> Any:
        """On a shared store, a caller's id raced on two nodes makes one log: the node that
        claims the id writes it, the other answers with what was written."""
        assert self._claims is not None
        org = caller.org
        if await self._claims.claim("log", org, log_id):
            try:
                answer = await self._create(caller, log)
            except BaseException:
                await self._claims.release("log", org, log_id)
                raise
            await self._claims.finish("log", org, log_id)
            return answer
        existing = await self._claims.wait_for(
            lambda: asyncio.to_thread(find_log, self._store, org, log_id)
        )
        if existing is None:
            raise ApiError(
                409,
                "conflict",
                "A log with this id is still being written; retry shortly",
                headers={"Retry-After": "1"},
            )
        return lj.post_json(existing, inline=True)

    async def _create(self, caller: Any, log: Any) -> Any:
        org = caller.org
        log_id = log.id or ls.new_id()
        stored = await self.media.store(org, log_id, log.attachments, self._redactor)
        seq, now = self._seq.next()
        row = _row(
            org,
            log_id=log_id,
            log=log,
            attachments=stored,
            key_label=caller.label,
            seq=seq,
            now=now,
        )
        row["project_id"] = await self._ensure_project(org, log.project, log.task, now)
        kinds: cb.Kinds = []
        if log.sync:
            ev = await self.evaluator.evaluate(
                org,
                row["project_id"],
                log.task,
                log.output,
                log.confidence,
                input_text=log.input_text,
            )
            row |= self.evaluator.stored(row) | verdict_fields(ev, datetime.now(UTC))
            settings, secrets = await self.workspace.load(org)
            kinds = cb.deliveries(row, "evaluated", settings, secrets)
        if log.id is None and not kinds:
            # A fresh id cannot exist yet and nothing else is written: the group commit.
            await self._store.append(Rows(None, org, ls.log_table([row]), target="eval_logs"))
            written = row
        else:
            written = await self._store.acall(lambda cur: _insert(cur, row, now, kinds))
        if written is row:
            if log.sync:
                self.outbox.kick()
            else:
                self.evaluator.submit(org, log_id)
        return lj.post_json(written, inline=log.sync or written is not row)

    async def _ensure_project(self, org: str, name: str, task: str | None, now: datetime) -> str:
        """The project's id, created (with the task) on first use; cached per org."""
        cached = self._known.get((org, name, task))
        if cached is not None and time.monotonic() - cached[0] < KNOWN_TTL_S:
            return cached[1]

        def write(cur: duckdb.DuckDBPyConnection) -> str:
            project = ls.ensure_project(cur, org, name, now)
            if task:
                ls.ensure_task(cur, org, project.id, task, now)
            return project.id

        project_id = await self._store.acall(write)
        if len(self._known) > 100_000:
            self._known.clear()
        self._known[(org, name, task)] = (time.monotonic(), project_id)
        return project_id

    def _changed(self, org: str) -> None:
        """Projects, tasks or rules of `org` changed: forget what is cached about them."""
        self.rules.invalidate(org)
        for key in [k for k in self._known if k[0] == org]:
            del self._known[key]

    def _deleted(self, org: str, log_ids: list[str]) -> None:
        self.media.delete(org, log_ids)
        self._changed(org)


def _row(
    org: str,
    *,
    log_id: str,
    log: LogInput,
    attachments: list[dict[str, Any]],
    key_label: str,
    seq: int,
    now: datetime,
) -> dict[str, Any]:
    return {
        "org": org,
        "id": log_id,
        "project": log.project,
        "task": log.task,
        "status": "pending",
        "created_at": log.timestamp or now,
        "received_at": now,
        "seq": seq,
        "key_id": key_label,
        "output": log.output,
        "input": ls.dumps(log.input),
        "input_text": log.input_text,
        "model": log.model,
        "latency_ms": log.latency_ms,
        "cost_usd": log.cost_usd,
        "confidence": log.confidence,
        "metadata": ls.dumps(log.metadata),
        "tags": log.tags,
        "session_id": log.session_id,
        "subject_id": log.subject_id,
        "actor_id": log.actor_id,
        "attachments": ls.dumps(attachments),
        "callback_url": log.callback_url,
        "callback_events": log.callback_events,
    }


def _insert(
    cur: duckdb.DuckDBPyConnection, row: dict[str, Any], now: datetime, kinds: cb.Kinds
) -> dict[str, Any]:
    """Insert the log (with its callback and notifications) unless its id exists already:
    then the stored one is returned instead (an idempotent retry)."""
    existing = ls.get_log(cur, row["org"], row["id"])
    if existing is not None:
        return existing
    ls.insert(cur, "eval_logs", row)
    cb.enqueue(cur, row, "evaluated", now, kinds)
    return row
