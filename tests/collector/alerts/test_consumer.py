"""Tests for the alerts consumer (`collector/alerts/consumer.py`) driven by the real run follower
over a real DuckLake store: per-run rules once per run across re-derivation and restart,
window events opening and resolving, manual resolution, cool-down, delivery and its retries.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from collector.alerts import outbox as alerts_outbox
from collector.alerts import store as st
from collector.alerts.config import AlertsConfig
from collector.alerts.consumer import AlertsConsumer
from collector.outbound.outbox import Outbox
from collector.read import alerts as read_alerts
from collector.runs.follow import RunFollower
from collector.store.query import Window
from collector.store.writer import Store
from processors.alerts.rules import AlertRuleSpec
from tests.stores import service_store

S = 1_000_000_000
T0 = 1_800_000_000 * S
HOOK = {"type": "webhook", "url": "https://hooks.example/alerts", "secret": "s3cret-value"}


class Clock:
    def __init__(self) -> None:
        self.ns = T0

    def __call__(self) -> int:
        return self.ns


class Channels:
    """The external side of delivery: records what would be sent, fails while told to."""

    def __init__(self) -> None:
        self.sent: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
        self.failing = False

    async def __call__(self, channel: Mapping[str, Any], note: Mapping[str, Any]) -> None:
        if self.failing:
            raise ConnectionError("receiver down")
        self.sent.append((channel, note))


@dataclasses.dataclass
class Rig:
    store: Store
    outbox: Outbox
    consumer: AlertsConsumer
    follower: RunFollower
    clock: Clock
    channels: Channels

    def step(self) -> None:
        """One tick as the service runs it: the step, the window aggregation after it (as
        `after_commit` does, off the writer thread), and the step that writes its decisions."""
        self.follower.step(self.clock.ns)
        self.consumer.evaluate_due(self.clock.ns)
        self.follower.step(self.clock.ns)

    def deliver(self) -> None:
        asyncio.run(self.outbox.drain())

    def events(self, **kw: Any) -> list[dict[str, Any]]:
        window = Window(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
        page, _ = read_alerts.list_events(
            self.store, read_alerts.AlertEventFilter("acme", window, **kw), None, 100
        )
        return page


def rig_for(store: Store, clock: Clock, config: AlertsConfig | None = None, **kw: Any) -> Rig:
    channels = Channels()
    config = config or AlertsConfig(evaluation_interval_s=1, cooldown_s=0, retry_base_s=5)
    outbox = Outbox(store, clock=clock, recheck_s=60)
    outbox.create_tables()
    consumer = AlertsConsumer(store, config, outbox=outbox, send=channels, clock=clock, **kw)
    follower = RunFollower(store, [consumer], clock=clock)
    follower.create_tables()
    return Rig(store, outbox, consumer, follower, clock, channels)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with service_store(tmp_path) as store:
        yield rig_for(store, Clock())


def add_rule(store: Store, spec: AlertRuleSpec, org: str = "acme") -> str:
    now = datetime.now(UTC)
    rule_id = st.new_id("ar")
    record = st.RuleRecord(org, rule_id, spec.name, dataclasses.asdict(spec), "api", now, now)
    store.call(lambda cur: st.put_rule(cur, record))
    return rule_id


def add_run(store: Store, run_id: str, end_ns: int, **kw: Any) -> None:
    values: dict[str, Any] = {
        "org": "acme",
        "run_id": run_id,
        "trace_id": run_id[:32].ljust(32, "0"),
        "workflow_name": "support",
        "status": "success",
        "started_at": st.to_dt(end_ns - 2 * S),
        "ended_at": st.to_dt(end_ns),
        "duration_ms": 2000,
        "cost_usd": 0.01,
        "total_tokens": 100,
        "llm_call_count": 1,
        "tool_use_count": 0,
        "updated_at": st.to_dt(end_ns),
        **kw,
    }
    cols = ", ".join(values)
    marks = ", ".join("?" for _ in values)

    def write(cur: Any) -> None:
        # Re-derivation replaces a run's row, as collector/runs/derive.py does.
        cur.execute("DELETE FROM runs WHERE org = ? AND run_id = ?", [values["org"], run_id])
        cur.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", list(values.values()))

    store.call(write)


def test_a_run_rule_fires_once_per_run_across_rederivation_and_restart(tmp_path: Path) -> None:
    clock = Clock()
    with service_store(tmp_path) as store:
        r = rig_for(store, clock)
        rule_id = add_rule(store, AlertRuleSpec(name="costly", condition="run_cost", threshold=0.5))
        add_run(store, "run-a", T0, cost_usd=0.5)  # at the threshold: no event
        add_run(store, "run-b", T0, cost_usd=0.75)
        r.step()
        events = r.events()
        assert [(e["run_id"], e["triggered_value"], e["threshold_value"]) for e in events] == [
            ("run-b", 0.75, 0.5)
        ]
        assert events[0]["alert_rule_id"] == rule_id
        assert events[0]["alert_rule_name"] == "costly"
        assert events[0]["workflow_name"] == "support"
        assert events[0]["resolved_at"] is None
        assert events[0]["notification_sent"] is False  # no channels
        add_run(store, "run-b", T0 + S, cost_usd=0.9)  # a late span re-derives the run
        clock.ns += 2 * S
        r.step()
        assert len(r.events()) == 1
    # A restart: new store object, consumer and follower on the same data.
    with service_store(tmp_path) as store:
        r = rig_for(store, clock)
        add_run(store, "run-b", T0 + 2 * S, cost_usd=1.2)
        r.step()
        assert [e["run_id"] for e in r.events()] == ["run-b"]
        assert read_alerts.run_events(store, "acme", "run-b")[0]["id"] == r.events()[0]["id"]
        assert read_alerts.run_events(store, "globex", "run-b") == []


def test_a_step_that_fails_is_redone_without_a_second_event(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_rule(rig.store, AlertRuleSpec(name="failed", condition="run_status"))
    add_run(rig.store, "run-x", T0, status="error")
    real = alerts_outbox.queue
    calls = 0

    def crash_after_insert(*a: Any, **kw: Any) -> None:
        nonlocal calls
        calls += 1
        real(*a, **kw)
        if calls == 1:
            raise RuntimeError("crash mid-step")

    monkeypatch.setattr(alerts_outbox, "queue", crash_after_insert)
    add_rule(rig.store, AlertRuleSpec(name="failed2", condition="run_status", channels=[HOOK]))
    rig.follower.step(rig.clock.ns)  # the first attempt aborts: nothing of it is committed
    assert rig.events() == []
    rig.step()  # the same runs come again
    assert sorted(e["alert_rule_name"] for e in rig.events()) == ["failed", "failed2"]
    rig.step()
    assert len(rig.events()) == 2


def test_window_rule_opens_one_event_and_resolves_when_it_clears(rig: Rig) -> None:
    spec = AlertRuleSpec(
        name="errors",
        condition="workflow_error_rate",
        threshold=0.5,
        window_s=600,
        min_sample=4,
        channels=[HOOK],
    )
    rule_id = add_rule(rig.store, spec)
    for i, status in enumerate(["error", "error", "success"]):
        add_run(rig.store, f"r{i}", T0 - 60 * S, status=status)
    rig.step()
    assert rig.events() == []  # 3 runs: below min_sample, undecided
    add_run(rig.store, "r3", T0 - 50 * S, status="success")
    rig.clock.ns += 2 * S
    rig.step()
    assert rig.events() == []  # 2 of 4 = 0.5: at the threshold, not above
    add_run(rig.store, "r4", T0 - 40 * S, status="timeout")
    rig.clock.ns += 2 * S
    rig.step()
    (event,) = rig.events(rule_id=rule_id)
    assert event["workflow_name"] == "support"
    assert event["run_id"] is None
    assert event["triggered_value"] == pytest.approx(0.6)
    assert event["threshold_value"] == 0.5
    for _ in range(3):  # still above: the same event stays open, no new one
        rig.clock.ns += 2 * S
        rig.step()
    assert len(rig.events()) == 1
    rig.deliver()
    assert [n["kind"] for _, n in rig.channels.sent] == ["alert.triggered"]
    assert rig.events()[0]["notification_sent"] is True
    # Ten minutes on, every run has left the window: too few to judge, still open...
    rig.clock.ns += 700 * S
    rig.step()
    assert rig.events(resolved=False) != []
    for i in range(4):  # ...until enough healthy runs show it cleared.
        add_run(rig.store, f"ok{i}", rig.clock.ns - S)
    rig.clock.ns += 2 * S
    rig.step()
    (resolved,) = rig.events(resolved=True)
    assert resolved["id"] == event["id"]
    assert resolved["resolved_at"] is not None
    rig.deliver()
    assert [n["kind"] for _, n in rig.channels.sent] == ["alert.triggered", "alert.resolved"]


def test_window_rules_are_evaluated_at_a_bounded_rate(rig: Rig) -> None:
    spec = AlertRuleSpec(name="spend", condition="org_total_cost", threshold=1.0, window_s=3600)
    cfg = AlertsConfig(evaluation_interval_s=60, cooldown_s=0)
    slow = rig_for(rig.store, rig.clock, cfg)
    slow.follower = RunFollower(rig.store, [slow.consumer], clock=rig.clock)
    add_rule(rig.store, spec)
    slow.step()  # evaluated now: nothing spent
    add_run(rig.store, "big", T0 - S, cost_usd=5.0)
    rig.clock.ns += 30 * S
    slow.step()
    assert slow.events() == []  # not due again for another 30 s
    rig.clock.ns += 31 * S
    slow.step()
    assert [e["triggered_value"] for e in slow.events()] == [5.0]


def test_a_manual_resolve_holds_until_the_condition_clears(rig: Rig) -> None:
    spec = AlertRuleSpec(name="budget", condition="workflow_total_cost", threshold=1, window_s=60)
    add_rule(rig.store, spec)
    add_run(rig.store, "big", T0 - S, cost_usd=2.0)
    rig.step()
    (event,) = rig.events()
    done = rig.store.call(
        lambda cur: st.resolve_by_hand(cur, "acme", event["id"], datetime.now(UTC))
    )
    assert done is not None and done["resolved_at"] is not None
    assert (
        rig.store.call(
            lambda cur: st.resolve_by_hand(cur, "globex", event["id"], datetime.now(UTC))
        )
        is None
    )
    rig.clock.ns += 2 * S
    rig.step()
    assert len(rig.events()) == 1  # still over budget, but acknowledged: no new event
    rig.clock.ns += 120 * S  # the run leaves the window: the condition clears
    rig.step()
    add_run(rig.store, "big2", rig.clock.ns - S, cost_usd=3.0)
    rig.clock.ns += 2 * S
    rig.step()
    assert [e["triggered_value"] for e in rig.events()] == [3.0, 2.0]


def test_cooldown_suppresses_notifications_not_events(tmp_path: Path) -> None:
    with service_store(tmp_path) as store:
        r = rig_for(store, Clock(), AlertsConfig(cooldown_s=300))
        add_rule(store, AlertRuleSpec(name="slow", condition="run_duration_ms", threshold=1000,
                                      channels=[HOOK]))  # fmt: skip
        add_run(store, "a", T0, duration_ms=5000)
        r.step()
        r.clock.ns += 10 * S
        add_run(store, "b", T0 + 10 * S, duration_ms=6000)
        r.step()
        r.deliver()
        assert len(r.events()) == 2
        assert len(r.channels.sent) == 1  # b fell inside a's cool-down
        sent = {e["run_id"]: e["notification_sent"] for e in r.events()}
        assert sent == {"a": True, "b": False}
        r.clock.ns += 300 * S
        add_run(store, "c", r.clock.ns, duration_ms=7000)
        r.step()
        r.deliver()
        assert len(r.channels.sent) == 2


def test_a_failed_delivery_is_retried_with_backoff(rig: Rig) -> None:
    add_rule(rig.store, AlertRuleSpec(name="tokens", condition="run_total_tokens", threshold=10,
                                      channels=[HOOK]))  # fmt: skip
    add_run(rig.store, "t", T0, total_tokens=11)
    rig.step()
    rig.channels.failing = True
    rig.deliver()
    assert rig.events()[0]["notification_sent"] is False
    (row,) = rig.store.query("SELECT status, attempts, epoch_ns(next_at), last_error "
                             "FROM outbox")  # fmt: skip
    assert row[0] == "pending" and row[1] == 1 and row[3] == "ConnectionError"
    assert T0 + 4 * S <= row[2] <= T0 + 6 * S  # retry_base_s=5, with jitter
    rig.channels.failing = False
    rig.deliver()  # not due yet
    assert rig.channels.sent == []
    rig.clock.ns += 7 * S
    rig.deliver()
    assert len(rig.channels.sent) == 1
    assert rig.events()[0]["notification_sent"] is True
    channel, note = rig.channels.sent[0]
    assert channel == HOOK
    assert note["payload"]["alert_event"]["run_id"] == "t"


def test_declared_rules_are_upserted_by_name(tmp_path: Path) -> None:
    clock = Clock()
    a = AlertRuleSpec(name="a", condition="run_cost", threshold=1)
    b = AlertRuleSpec(name="b", condition="run_status")
    with service_store(tmp_path) as store:
        rig_for(store, clock, declared=[("acme", a), ("acme", b)])
        first = {r.name: r for r in store.call(st.load_rules)}
        assert set(first) == {"a", "b"} and first["a"].source == "config"
    with service_store(tmp_path) as store:
        changed = dataclasses.replace(a, threshold=2)
        rig_for(store, clock, declared=[("acme", changed)])
        now = {r.name: r for r in store.call(st.load_rules)}
        assert set(now) == {"a"}
        assert now["a"].rule_id == first["a"].rule_id
        assert now["a"].spec["threshold"] == 2


def test_flagged_outputs_count_zero_without_eval_logs_then_count_them(rig: Rig) -> None:
    spec = AlertRuleSpec(name="flags", condition="org_flagged_outputs", threshold=1, window_s=60)
    add_rule(rig.store, spec)
    rig.step()
    assert rig.events() == []
    now = st.to_dt(rig.clock.ns)

    def flag(cur: Any) -> None:
        cur.execute("CREATE TABLE IF NOT EXISTS eval_logs (org VARCHAR, status VARCHAR, "
                    "created_at TIMESTAMPTZ)")  # fmt: skip
        for org, status in [("acme", "flagged"), ("acme", "flagged"), ("acme", "passed"),
                            ("globex", "flagged")]:  # fmt: skip
            cur.execute("INSERT INTO eval_logs VALUES (?, ?, ?)", [org, status, now])

    rig.store.call(flag)
    rig.clock.ns += 2 * S
    rig.step()
    assert [e["triggered_value"] for e in rig.events()] == [2.0]


def test_tool_error_rate_over_tool_calls(rig: Rig) -> None:
    spec = AlertRuleSpec(name="tool", condition="tool_error_rate", threshold=0.25, window_s=60,
                         tools=["search"])  # fmt: skip

    def spans(cur: Any) -> None:
        for i, (tool, failed) in enumerate([("search", True), ("search", False), ("fetch", True)]):
            start = T0 - 10 * S + i
            cur.execute(
                "INSERT INTO spans (org, trace_id, span_id, span_type, tool_name, is_error, "
                "start_time_unix_nano, end_time_unix_nano) VALUES (?, ?, ?, 'tool', ?, ?, ?, ?)",
                ["acme", "f" * 32, f"{i:016x}", tool, failed, start, start + S],
            )

    rig.store.call(spans)
    add_rule(rig.store, spec)
    rig.step()
    (event,) = rig.events()
    assert event["triggered_value"] == 0.5
    assert event["workflow_name"] is None


def test_after_commit_delivers_what_a_step_queued_even_after_an_idle_pass(rig: Rig) -> None:
    async def scenario() -> None:
        await rig.outbox.start()  # its idle pass: the next look is a minute away (recheck_s)
        await asyncio.to_thread(rig.step)
        await rig.consumer.after_commit()  # nothing queued: no wake-up
        add_rule(rig.store, AlertRuleSpec(name="c", condition="run_cost", threshold=0.1,
                                          channels=[HOOK]))  # fmt: skip
        add_run(rig.store, "x", T0, cost_usd=1.0)
        await asyncio.to_thread(rig.step)
        await rig.consumer.after_commit()  # the queued row wakes delivery at once
        for _ in range(100):
            if rig.channels.sent:
                break
            await asyncio.sleep(0.05)
        await rig.outbox.stop()
        assert len(rig.channels.sent) == 1

    asyncio.run(scenario())
