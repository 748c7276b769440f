"""The "alerts" run consumer: fires per-run rules on finished runs, opens and resolves window
rules' events on ticks, and queues each notification in the outbox of the same transaction.

Fed by `collector/runs/follow.py` (finished runs, once per committed fact); rules come from
`alert_rules` (the API and the config), window aggregates from `collector/alerts/window.py`
(read after each step, off the writer thread), decisions from the alert engine
(`processors/alerts/engine.py`); notifications leave through the outbox's alerts topic
(`collector/alerts/outbox.py`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb

from collector.alerts import outbox as alerts_outbox
from collector.alerts import store as st
from collector.alerts import window as alerts_window
from collector.alerts.config import AlertsConfig
from collector.alerts.outbox import AlertsTopic, Sender
from collector.api.shapes import rfc3339
from collector.model import StoreUnavailable
from collector.outbound.outbox import Outbox
from collector.secretbox import SecretBox
from collector.store.lake import LAKE
from collector.store.writer import Store
from processors.alerts import engine
from processors.alerts.engine import Aggregate, OpenEvent
from processors.alerts.rules import AlertRuleSpec

log = logging.getLogger(__name__)
_NS = 1_000_000_000
Ready = dict[str, tuple[datetime, int, alerts_window.Aggregates]]


@dataclasses.dataclass(frozen=True)
class AlertRule:
    record: st.RuleRecord
    spec: AlertRuleSpec


def run_event_id(org: str, rule_id: str, run_id: str) -> str:
    """The one event id a (rule, run) pair can have: what makes a per-run rule fire at most once
    per run, across re-derivations of the run and restarts."""
    digest = hashlib.sha256(f"{org}\0{rule_id}\0{run_id}".encode()).hexdigest()
    return f"ae_{digest[:24]}"


class AlertsConsumer:
    """`consume` runs on the store's writer thread and only writes decisions; `after_commit`
    (event loop) wakes the outbox for what a step queued and aggregates due window rules for the
    next step. With `send`, the alerts topic is registered with `outbox` (delivery)."""

    name = "alerts"

    def __init__(
        self,
        store: Store,
        config: AlertsConfig,
        *,
        outbox: Outbox,
        declared: Sequence[tuple[str, Any]] = (),
        send: Sender | None = None,
        box: SecretBox | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._config = config
        self._declared = list(declared)
        self._parsed: dict[tuple[str, str], tuple[datetime, Any]] = {}  # None: unusable
        self._store = store
        self._clock = clock
        self._box = box
        self._evaluating: asyncio.Task[None] | None = None
        self._window_rules: tuple[int, list[AlertRule]] | None = None  # (commits seen, rules)
        self._outbox = outbox
        self._queued = False  # a step queued messages: wake the outbox after its commit
        if send is not None:
            outbox.register(AlertsTopic(store, config, send, box))
        self.windows = alerts_window.WindowEvaluator(
            store, config.evaluation_interval_s, config.max_rules_per_tick
        )

    # -- start ---------------------------------------------------------------------------------

    def create_tables(self, cur: duckdb.DuckDBPyConnection) -> None:
        st.create_tables(cur)
        self._upsert_declared(cur)

    def _upsert_declared(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Rules of the config file, by (org, name): inserted, replaced when changed, and
        dropped from the store when no longer declared (the file is their source of truth)."""
        now = datetime.now().astimezone()
        wanted = {(org, spec.name) for org, spec in self._declared}
        for record in st.load_rules(cur):
            if record.source == "config" and (record.org, record.name) not in wanted:
                st.delete_rule(cur, record.org, record.rule_id)
        for org, spec in self._declared:
            fields = dataclasses.asdict(spec)
            old = st.rule_by_name(cur, org, spec.name, self._box)
            if old is not None and old.source == "config" and old.spec == fields:
                continue
            st.put_rule(
                cur,
                st.RuleRecord(
                    org=org,
                    rule_id=old.rule_id if old is not None else st.new_id("ar"),
                    name=spec.name,
                    spec=fields,
                    source="config",
                    created_at=old.created_at if old is not None else now,
                    updated_at=now,
                ),
                self._box,
            )

    # -- each step -----------------------------------------------------------------------------

    def due(self) -> bool:
        return self._config.enabled and self.windows.has_ready()

    def consume(
        self, cur: duckdb.DuckDBPyConnection, runs: list[dict[str, Any]], now_ns: int
    ) -> None:
        if not self._config.enabled:
            return
        ready = self.windows.take()
        if not runs and not ready:
            return  # an idle tick: no query on the writer thread
        rules = self._rules(cur)
        if runs:
            self._per_run(cur, [r for r in rules if not r.spec.is_window], runs, now_ns)
        if ready:
            self._windows(cur, rules, ready, now_ns)

    async def after_commit(self) -> None:
        if self._queued:
            self._queued = False
            self._outbox.kick()
        if self._config.enabled and (self._evaluating is None or self._evaluating.done()):
            self._evaluating = asyncio.create_task(self._evaluate())

    async def _evaluate(self) -> None:
        try:
            await asyncio.to_thread(self.evaluate_due, self._clock())
        except (StoreUnavailable, duckdb.ConnectionException):
            pass  # stopping (the store closed under it), or down: the next tick tries again
        except Exception:
            if not store_closed(self._store):
                log.exception("alert window evaluation failed; retrying next tick")

    def evaluate_due(self, now_ns: int) -> int:
        """Aggregate the window rules due at `now_ns` on a reader cursor (blocking); the next
        `consume` writes what they decide. Returns how many rules were evaluated."""
        seen = self._store.commits.count
        if self._window_rules is None or seen != self._window_rules[0]:
            # Rules change only by commits: read them again only after one.
            cur = self._store.cursor()
            try:
                self._window_rules = (seen, [r for r in self._rules(cur) if r.spec.is_window])
            finally:
                cur.close()
        return self.windows.evaluate_due(self._window_rules[1], now_ns)

    def _rules(self, cur: duckdb.DuckDBPyConnection) -> list[AlertRule]:
        out: list[AlertRule] = []
        for record in st.load_rules(cur):
            key = (record.org, record.rule_id)
            cached = self._parsed.get(key)
            if cached is None or cached[0] != record.updated_at:
                try:
                    spec = AlertRuleSpec(**record.spec)
                except (TypeError, ValueError) as e:
                    log.warning("alert rule %s of %s is unusable: %s", record.rule_id, key[0], e)
                    spec = None  # logged once per version of the rule
                cached = self._parsed[key] = (record.updated_at, spec)
            if cached[1] is not None and cached[1].enabled:
                out.append(AlertRule(record, cached[1]))
        return out

    def _per_run(
        self, cur: duckdb.DuckDBPyConnection, rules: list[AlertRule], runs: list[dict[str, Any]],
        now_ns: int,
    ) -> None:  # fmt: skip
        firings: list[tuple[str, AlertRule, dict[str, Any], float]] = []
        for run in runs:
            for rule in rules:
                if rule.record.org != run["org"]:
                    continue
                value = engine.run_value(rule.spec, run)
                if value is not None:
                    event_id = run_event_id(run["org"], rule.record.rule_id, run["run_id"])
                    firings.append((event_id, rule, run, value))
        if not firings:
            return
        ids = [f[0] for f in firings]
        seen = {
            row[0]
            for row in cur.execute(
                f"SELECT event_id FROM {LAKE}.alert_events WHERE list_contains(?, event_id)",
                [ids],
            ).fetchall()
        }
        for event_id, rule, run, value in firings:
            if event_id in seen:
                continue  # fired before: this run was re-derived, or the step is redone
            seen.add(event_id)
            event = {
                "event_id": event_id,
                "subject": run["run_id"],
                "run_id": run["run_id"],
                "workflow_name": run.get("workflow_name"),
                "status": run.get("status"),
                "triggered_value": value,
                "threshold_value": float(rule.spec.threshold),
            }
            self._open(cur, rule, event, now_ns)

    def _windows(
        self, cur: duckdb.DuckDBPyConnection, rules: list[AlertRule], ready: Ready, now_ns: int
    ) -> None:
        """Decide and write what the aggregates computed since the last step say."""
        by_id = {r.record.rule_id: r for r in rules if r.spec.is_window}
        current = {
            k: v for k, v in ready.items() if k in by_id and by_id[k].record.updated_at == v[0]
        }
        if not current:
            return  # rules deleted or edited since they were aggregated: due again at once
        live: dict[str, list[Any]] = {}
        for rule_id, event_id, subject, acked in cur.execute(
            f"""SELECT rule_id, event_id, subject, resolved_at IS NOT NULL FROM {LAKE}.alert_events
                WHERE list_contains(?, rule_id) AND run_id IS NULL AND cleared_at IS NULL
                  AND (resolved_at IS NULL OR resolved_by = 'manual')""",
            [list(current)],
        ).fetchall():
            live.setdefault(rule_id, []).append(OpenEvent(event_id, subject, acked))
        for rule_id, (_, _as_of, rows) in current.items():
            aggs = [Aggregate(*a) for a in rows]
            self._decide(cur, by_id[rule_id], aggs, live.get(rule_id, []), now_ns)

    def _decide(
        self, cur: duckdb.DuckDBPyConnection, rule: AlertRule, aggs: list[Any], live: list[Any],
        now_ns: int,
    ) -> None:  # fmt: skip
        now = st.to_dt(now_ns)
        for d in engine.decide_window(rule.spec, aggs, live):
            if d.action == "open":
                scope = rule.spec.scope
                event = {
                    "event_id": st.new_id("ae"),
                    "subject": d.subject,
                    "run_id": None,
                    "workflow_name": d.subject if scope == "workflow" else None,
                    "status": None,
                    "triggered_value": float(d.value or 0.0),
                    "threshold_value": float(rule.spec.threshold),
                }
                self._open(cur, rule, event, now_ns)
            elif d.action == "resolve":
                assert d.event_id is not None  # the engine resolves only a live event
                self._resolve(cur, rule, d.event_id, d.subject, now_ns)
            else:
                cur.execute(
                    f"UPDATE {LAKE}.alert_events SET cleared_at = ? WHERE event_id = ?",
                    [now, d.event_id],
                )

    # -- writing events and their notifications ------------------------------------------------

    def _open(
        self, cur: duckdb.DuckDBPyConnection, rule: AlertRule, event: dict[str, Any], now_ns: int
    ) -> None:
        org, rule_id = rule.record.org, rule.record.rule_id
        now = st.to_dt(now_ns)
        cur.execute(
            f"INSERT INTO {LAKE}.alert_events VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false, NULL, NULL, NULL, ?)",
            [
                org, event["event_id"], rule_id, rule.record.name, rule.spec.condition,
                event["subject"], event["run_id"], event["workflow_name"], event["status"],
                event["triggered_value"], event["threshold_value"], now,
            ],
        )  # fmt: skip
        channels = rule.spec.channels
        if not channels:
            return
        cooldown = rule.spec.cooldown_s
        cooldown = self._config.cooldown_s if cooldown is None else int(cooldown)
        last_ns = alerts_outbox.last_announced_ns(cur, org, rule_id)
        suppressed = engine.in_cooldown(last_ns, now_ns, cooldown)
        public = self._public_event(rule, event, now_ns, None)
        note = engine.notification(rule.spec, public, alerts_outbox.TRIGGERED, event["subject"])
        key = (org, event["event_id"], rule_id)
        alerts_outbox.queue(cur, key, note, channels=len(channels), now=now, suppressed=suppressed)
        self._queued = self._queued or not suppressed

    def _resolve(
        self, cur: duckdb.DuckDBPyConnection, rule: AlertRule, event_id: str, subject: str,
        now_ns: int,
    ) -> None:  # fmt: skip
        now = st.to_dt(now_ns)
        cur.execute(
            f"""UPDATE {LAKE}.alert_events SET resolved_at = ?, resolved_by = 'auto',
                cleared_at = ? WHERE event_id = ?""",
            [now, now, event_id],
        )
        if not rule.spec.channels or not alerts_outbox.announced(cur, event_id):
            return  # its opening was not announced (cool-down): neither is its end
        row = cur.execute(
            f"""SELECT run_id, workflow_name, status, triggered_value, threshold_value,
                       notification_sent, epoch_us(created_at) FROM {LAKE}.alert_events
                WHERE event_id = ?""",
            [event_id],
        ).fetchone()
        assert row is not None
        event = {
            "event_id": event_id, "run_id": row[0], "workflow_name": row[1], "status": row[2],
            "triggered_value": row[3], "threshold_value": row[4],
        }  # fmt: skip
        public = self._public_event(rule, event, int(row[6]) * 1000, now_ns, bool(row[5]))
        note = engine.notification(rule.spec, public, "alert.resolved", subject)
        key = (rule.record.org, event_id, rule.record.rule_id)
        alerts_outbox.queue(cur, key, note, channels=len(rule.spec.channels), now=now)
        self._queued = True

    @staticmethod
    def _public_event(
        rule: AlertRule,
        event: Mapping[str, Any],
        created_ns: int,
        resolved_ns: int | None,
        sent: bool = False,
    ) -> dict[str, Any]:
        """The AlertEvent document of `event` (the webhook payload), plus the run's status."""
        out = {
            "id": event["event_id"],
            "alert_rule_id": rule.record.rule_id,
            "alert_rule_name": rule.record.name,
            "run_id": event["run_id"],
            "workflow_name": event["workflow_name"],
            "triggered_value": float(event["triggered_value"]),
            "threshold_value": float(event["threshold_value"]),
            "notification_sent": sent,
            "resolved_at": None if resolved_ns is None else rfc3339(resolved_ns // 1000),
            "created_at": rfc3339(created_ns // 1000),
        }
        if event.get("status"):
            out["status"] = event["status"]
        return out


def store_closed(store: Store) -> bool:
    """Whether `store` has been closed (a background task failing at shutdown is no error)."""
    try:
        store.cursor().close()
    except StoreUnavailable:
        return True
    except duckdb.Error:
        return True
    return False
