"""The logs feature's parts in process: the POST body, workspace tokens, the evaluator (judge
failures, redaction of what is stored) and callbacks' retries through the outbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from collector.auth.keys import Authenticator
from collector.errors import ApiError
from collector.evals import store as ls
from collector.evals.auth import LogsAuth
from collector.evals.callbacks import Callbacks, deliveries, enqueue
from collector.evals.config import EvalsConfig
from collector.evals.evaluate import Evaluator, JudgeSettings
from collector.evals.request import parse_log
from collector.evals.rules import RuleCache
from collector.outbound.config import OutboundPolicy
from collector.outbound.outbox import Outbox
from collector.store.lake import StoreSettings
from collector.store.writer import Store
from processors.output_rules.engine import RuleEngine
from tests.fixtures.receiver import Answer, Receiver


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(StoreSettings(catalog=str(tmp_path / "c.ducklake"), data_path=str(tmp_path / "d")))
    s.open()
    s.call(ls.create_tables)
    Outbox(s).create_tables()
    try:
        yield s
    finally:
        s.close()


def test_body_aliases_blanks_and_numeric_strings() -> None:
    log = parse_log(
        {
            "project": " shop ",
            "output": {"reply": "hi"},
            "task": "",
            "latencyMs": "120",
            "confidence": "0.5",
            "conversationId": "c1",
            "ticketId": 42,
            "agentId": "bot",
            "sync": "true",
            "tags": "a, b,a",
            "metadata": {"tags": ["c"]},
        }
    )
    assert (log.project, log.task, log.latency_ms, log.confidence) == ("shop", None, 120.0, 0.5)
    assert json.loads(log.output) == {"reply": "hi"}
    assert (log.session_id, log.subject_id, log.actor_id) == ("c1", "42", "bot")
    assert log.sync is True and log.tags == ["a", "b", "c"]
    assert log.callback_events is None
    with pytest.raises(ApiError) as e:
        parse_log({"output": "x", "callbackUrl": "ftp://x", "id": "../etc"})
    assert {d["field"] for d in e.value.details or []} == {"project", "callbackUrl", "id"}
    assert (
        parse_log({"project": "p", "output": "", "callbackUrl": "https://h/x"}).callback_events
        == "all"
    )


def test_workspace_token_rotation(store: Store) -> None:
    auth = LogsAuth(store, Authenticator(store), rotations_per_hour=2)
    now = datetime.now(UTC)
    first = asyncio.run(auth.rotate("acme", now))
    assert auth.check(first, "admin").org == "acme"
    second = asyncio.run(auth.rotate("acme", now))
    with pytest.raises(ApiError) as refused:
        auth.check(first, "read")
    assert refused.value.status == 401
    with pytest.raises(ApiError) as limited:
        asyncio.run(auth.rotate("acme", now))
    assert limited.value.status == 429 and int(limited.value.headers["Retry-After"]) > 3000
    reloaded = LogsAuth(store, Authenticator(store))
    reloaded.load()  # hashed in the store: a restart keeps the token valid
    assert reloaded.check(second, "ingest").label == second.split("_")[0]
    row = store.query("SELECT token_hash FROM eval_workspace WHERE org = 'acme'")[0]
    assert second.split("_")[1] not in str(row)


class BrokenJudge:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def evaluate(self, **_: Any) -> Any:
        if self.mode == "slow":
            await asyncio.sleep(5)
        raise RuntimeError("provider answered 503")


class Stars:
    def text(self, value: str, *, field: str) -> str:
        return value.replace("secret", "******")

    def value(self, value: Any, *, field: str) -> Any:
        return value


def evaluator(store: Store, judge: Any, redactor: Any = None) -> Evaluator:
    async def keys(org: str) -> JudgeSettings:
        return JudgeSettings("openai", {"openai": "sk-x"})

    async def workspace(org: str) -> tuple[dict[str, Any], dict[str, str]]:
        return {}, {}

    engine = RuleEngine()
    return Evaluator(
        store,
        engine,
        RuleCache(store, engine),
        judge=judge,
        judge_settings=keys,
        workspace=workspace,
        judge_timeout_s=0.3,
        redactor=redactor,
    )


def add_rule(store: Store, rule_type: str, value: str) -> None:
    now = datetime.now(UTC)
    row = {
        "org": "acme",
        "id": ls.new_id(),
        "name": rule_type,
        "type": rule_type,
        "value": value,
        "is_active": True,
        "created_at": now,
        "updated_at": now,
    }
    store.call(lambda cur: ls.insert(cur, "eval_rules", row))


@pytest.mark.parametrize("mode", ["down", "slow"])
def test_a_failing_judge_is_an_error_verdict(store: Store, mode: str) -> None:
    add_rule(store, "llm_judge", "Is it polite?")
    add_rule(store, "length_limit", "100")
    ev = asyncio.run(evaluator(store, BrokenJudge(mode)).evaluate("acme", None, None, "hi", None))
    assert ev.status == "error" and ev.confidence == 0.0
    outcomes = [(r["ruleType"], r["outcome"]) for r in ev.rules]
    assert outcomes == [("llm_judge", "error"), ("length_limit", "passed")]
    assert ("timed out" if mode == "slow" else "503") in ev.explanation


def test_evaluated_then_stored_redacted(store: Store) -> None:
    add_rule(store, "keyword_required", "secret")
    e = evaluator(store, None, Stars())
    now = datetime.now(UTC)
    row = {
        "org": "acme",
        "id": "l1",
        "project": "p",
        "status": "pending",
        "created_at": now,
        "received_at": now,
        "seq": 1,
        "output": "the secret word",
        "tags": [],
    }
    store.call(lambda cur: ls.insert(cur, "eval_logs", row))

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(e.run(stop))
        e.submit("acme", "l1")
        for _ in range(100):
            if e.evaluated:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(run())
    status, output = store.query("SELECT status, output FROM eval_logs WHERE id = 'l1'")[0]
    assert (status, output) == ("pass", "the ****** word")  # evaluated on what was sent


def test_the_outbox_retries_with_backoff_across_restarts(store: Store) -> None:
    now = datetime.now(UTC)
    with Receiver() as hook:
        hook.script("/cb", Answer(503), Answer(200))
        row = {
            "org": "acme",
            "id": "l1",
            "status": "pass",
            "created_at": now,
            "callback_url": hook.url("/cb"),
            "callback_events": "all",
        }
        kinds = deliveries(row, "evaluated", {}, set())
        assert kinds == [("callback", hook.url("/cb"))]
        assert deliveries(row, "decision", {}, set()) == []
        store.call(lambda cur: enqueue(cur, row, "evaluated", now, kinds))

        async def secrets(org: str) -> tuple[dict[str, Any], dict[str, str]]:
            return {}, {"callbackSecret": "s3cret"}

        policy = OutboundPolicy(allow_private=True, timeout_s=5)
        config = EvalsConfig(callback_base_delay_s=0.2, callback_max_delay_s=0.4)

        def outbox() -> Outbox:
            box = Outbox(store)
            box.register(Callbacks(policy, secrets, None, config))
            return box

        asyncio.run(outbox().deliver_due())
        attempts, next_at, done = store.query("SELECT attempts, next_at, done_at FROM outbox")[0]
        assert (attempts, done) == (1, None) and next_at > now
        again = outbox()  # a restart

        async def until_done() -> None:
            for _ in range(50):
                await again.deliver_due()
                if again.counts["evals", "sent"]:
                    return
                await asyncio.sleep(0.1)

        asyncio.run(until_done())
        row = store.query("SELECT attempts, status, done_at IS NOT NULL, kind, target FROM outbox")
        assert row[0][:4] == (2, "sent", True, "log.evaluated")
        assert json.loads(row[0][4]) == {"channel": "callback", "url": hook.url("/cb")}
        assert len(hook.requests) == 2
