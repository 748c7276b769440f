"""ROI events of traced runs: spans appended to a real store, runs derived by the real deriver,
and the "roi_runs" consumer fed by the real follower: values, outcomes, idempotency, restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from collector.config import parse_config
from collector.configparse import ConfigError
from collector.prices.fx import FxTable
from collector.read import runs as qr
from collector.read import shapes as rs
from collector.read.detail import run_roi
from collector.roi import store as roi_store
from collector.roi.config import RoiConfig
from collector.roi.runs import RoiRuns, event_id
from collector.roi.tasktypes import load_catalogue
from collector.runs.follow import RunFollower
from collector.store.writer import Store
from tests.collector.runs.test_derive import (
    T0,
    T1,
    T2,
    S,
    agent,
    append,
    deriver,
    llm,
    settings,
    sid,
)

CATALOGUE = load_catalogue()
COLS = (
    "event_id, agent_id, task_type, outcome, agent_duration_seconds, baseline_minutes, "
    "baseline_source, hourly_rate, currency, hours_saved, cost_saved, agent_cost, cost_source, "
    "agent_cost_usd, net_saved, occurred_at, received_at, trace_id, span_id, run_id, key_id, "
    "metadata, response"
)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(settings(tmp_path))
    s.open()
    try:
        yield s
    finally:
        s.close()


def set_org(store: Store, org: str, values: dict[str, Any]) -> None:
    def write(cur: Any) -> None:
        cur.execute("DELETE FROM orgs WHERE name = ?", [org])
        cur.execute("INSERT INTO orgs VALUES (?, now(), ?)", [org, json.dumps(values)])

    store.call(write)


def follower(store: Store, config: RoiConfig | None = None) -> RunFollower:
    config = config or RoiConfig(workflows={"triage": "ticket_triage"})
    f = RunFollower(store, [RoiRuns(config, CATALOGUE)])
    f.create_tables()
    return f


def events(store: Store) -> list[dict[str, Any]]:
    rows = store.query(f"SELECT {COLS} FROM roi_events ORDER BY run_id, event_id")
    names = [c.strip() for c in COLS.split(",")]
    return [dict(zip(names, r, strict=True)) for r in rows]


def money(x: Decimal, places: str) -> float:
    return float(x.quantize(Decimal(places), ROUND_HALF_UP))


def test_a_successful_run_is_valued_like_track_with_its_llm_cost(store: Store) -> None:
    set_org(store, "acme", {"hourly_rate": 45, "currency": "EUR", "fx_rates": {"EUR": 0.9}})
    d, f = deriver(store), follower(store)
    append(store, [agent(T1, 1), llm(T1, 2, 1, cost_usd=0.02), llm(T1, 3, 1, cost_usd=0.0125)])
    d.step()
    assert f.step() == 1

    [e] = events(store)
    # The run spans T0+1 s .. T0+100 s: 99 s of agent time against ticket_triage's 5 minutes.
    hours = money((Decimal(300) - 99) / 3600, "0.001")
    saved = money(Decimal(repr(hours)) * 45, "0.01")
    cost = money(Decimal("0.0325") * Decimal("0.9"), "0.000001")
    skip = ("event_id", "occurred_at", "received_at", "metadata", "response")
    assert {k: e[k] for k in e if k not in skip} == {
        "agent_id": "triage", "task_type": "ticket_triage", "outcome": "success",
        "agent_duration_seconds": 99.0, "baseline_minutes": 5.0, "baseline_source": "builtin",
        "hourly_rate": 45.0, "currency": "EUR", "hours_saved": hours, "cost_saved": saved,
        "agent_cost": cost, "cost_source": "computed", "agent_cost_usd": pytest.approx(0.0325),
        "net_saved": pytest.approx(saved - cost, abs=1e-9), "trace_id": T1, "span_id": sid(1),
        "run_id": T1 + sid(1), "key_id": None,
    }  # fmt: skip
    assert e["occurred_at"] == datetime.fromtimestamp((T0 + 100 * S) / S, UTC)  # the run's end
    assert json.loads(e["metadata"]) == {
        "source": "traced_run", "run_status": "success", "cost_unknown_calls": 0,
    }  # fmt: skip
    body = json.loads(e["response"])
    assert body["resolved_cost_source"] == "computed" and body["event_id"] == e["event_id"]
    assert e["event_id"] == event_id("acme", T1 + sid(1), e["occurred_at"])


def test_rederived_and_replayed_runs_never_count_twice(store: Store) -> None:
    d, f = deriver(store), follower(store)
    append(store, [agent(T1, 1), llm(T1, 2, 1)])
    d.step()
    f.step()
    [first] = events(store)

    append(store, [llm(T1, 3, 1, cost_usd=0.0)])  # the whole trace is re-derived
    d.step()
    assert f.step() == 1
    assert events(store) == [first]  # same facts (no added cost): not rewritten

    append(store, [llm(T1, 4, 1, cost_usd=0.05)])  # a late span that changes the cost
    d.step()
    f.step()
    [changed] = events(store)
    assert changed["event_id"] == first["event_id"]
    assert changed["agent_cost"] == pytest.approx(0.06)

    # A restart (new follower, new consumer) resumes from the watermark: nothing again.
    assert follower(store).step() == 0
    # A redone step (e.g. after a crash before the commit) hands the same runs again.
    run = store.query(f"SELECT * FROM runs WHERE run_id = '{T1 + sid(1)}'")
    cols = [r[0] for r in store.query("SELECT column_name FROM (DESCRIBE runs)")]
    again = [dict(zip(cols, run[0], strict=True))]
    consumer = RoiRuns(RoiConfig(workflows={"triage": "ticket_triage"}), CATALOGUE)
    store.call(lambda cur: consumer.consume(cur, again, T0))
    assert events(store) == [changed]


def test_failed_runs_save_nothing_and_cost_what_they_cost(store: Store) -> None:
    d, f = deriver(store), follower(store)
    append(store, [agent(T1, 1, is_error=True, status_code=2), llm(T1, 2, 1, cost_usd=0.04)])
    d.step()
    f.step()
    [e] = events(store)
    assert (e["outcome"], e["hours_saved"], e["cost_saved"]) == ("failure", 0.0, 0.0)
    assert e["net_saved"] == pytest.approx(-0.04)
    assert json.loads(e["metadata"])["run_status"] == "error"
    assert roi_store.count_since(store, "acme", datetime(2000, 1, 1, tzinfo=UTC)) == 0


def test_only_mapped_workflows_per_org_and_known_task_types(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    config = RoiConfig(
        workflows={"triage": "ticket_triage", "other": "no_such_type"},
        orgs={"globex": {"triage": "email_classification"}},
    )
    d, f = deriver(store), follower(store, config)
    append(store, [agent(T1, 1), llm(T1, 2, 1)])
    g = {"org": "globex"}
    append(store, [agent(T1, 1, **g), llm(T1, 2, 1, **g)], org="globex")
    append(store, [agent(T2, 1, agent_name="other"), llm(T2, 2, 1)])
    append(store, [agent(T2, 1, agent_name="unmapped", **g), llm(T2, 2, 1, **g)], org="globex")
    d.step()
    with caplog.at_level(logging.WARNING, "collector.roi.runs"):
        assert f.step() == 4
    rows = store.query("SELECT org, agent_id, task_type FROM roi_events ORDER BY org")
    assert rows == [
        ("acme", "triage", "ticket_triage"),
        ("globex", "triage", "email_classification"),
    ]
    assert "'no_such_type' of workflow 'other' is unknown" in caplog.text


def test_unknown_costs_stay_unknown(store: Store) -> None:
    set_org(store, "acme", {"currency": "XTS"})  # a currency no FX table knows
    d, f = deriver(store), follower(store)
    append(store, [agent(T1, 1), llm(T1, 2, 1)])
    d.step()
    f.step()
    [e] = events(store)
    assert (e["agent_cost"], e["cost_source"], e["agent_cost_usd"]) == (None, "none", 0.01)
    assert e["net_saved"] == e["cost_saved"]


def test_an_eur_org_without_rates_gets_the_reference_rate(store: Store) -> None:
    set_org(store, "acme", {"currency": "EUR"})  # no fx_rates of its own
    d, f = deriver(store), follower(store)
    append(store, [agent(T1, 1), llm(T1, 2, 1)])
    d.step()
    f.step()
    [e] = events(store)
    # 0.01 USD at the shipped ECB table of 2024-06-28: 1 / 1.0705 EUR per USD.
    assert (e["agent_cost"], e["cost_source"]) == (0.009341, "computed")
    assert json.loads(e["response"])["fx"]["date"] == "2024-06-28"


def test_a_fetched_fx_table_converts_traced_runs(store: Store) -> None:
    set_org(store, "acme", {"currency": "GBP"})
    fetched = FxTable("EUR", "2026-11-30", "ecb", {"USD": 1.25, "GBP": 0.8})
    roi = RoiRuns(RoiConfig(workflows={"triage": "ticket_triage"}), CATALOGUE, lambda: fetched)
    d, f = deriver(store), RunFollower(store, [roi])
    f.create_tables()
    append(store, [agent(T1, 1), llm(T1, 2, 1)])
    d.step()
    f.step()
    [e] = events(store)
    assert (e["agent_cost"], e["cost_source"]) == (0.0064, "computed")  # 0.01 x 0.8 / 1.25
    assert json.loads(e["response"])["fx"] == {"rate": 0.64, "date": "2026-11-30", "source": "ecb"}


def test_the_roi_section_is_validated() -> None:
    config = parse_config({"roi": {"workflows": {"support-bot": "ticket_triage"}}}, {})
    assert config.roi.task_type("acme", "support-bot") == "ticket_triage"
    with pytest.raises(ConfigError) as bad:
        parse_config({"roi": {"workflows": {"bot": "Not A Type"}, "orgs": {"x": {"": "a"}}}}, {})
    assert sorted(i.path for i in bad.value.issues) == ["roi.orgs.x", "roi.workflows.bot"]


def track_event(store: Store, org: str, event: str, occurred: datetime, **link: str) -> None:
    record = {
        "event_id": event, "agent_id": "caller", "task_type": "email_classification",
        "outcome": "success", "occurred_at": occurred, "received_at": occurred,
        "baseline_minutes": 4.0, "baseline_source": "builtin", "hourly_rate": 50.0,
        "currency": "USD", "hours_saved": 0.066, "cost_saved": 3.3, "agent_cost": None,
        "cost_source": "none", "net_saved": 3.3, "key_id": "aaaa0001", **link,
    }  # fmt: skip
    asyncio.run(store.append(roi_store.event_rows(org, record)))


def test_a_runs_detail_lists_the_events_linked_to_it(store: Store) -> None:
    d, f = deriver(store), follower(store)
    append(
        store,
        [
            agent(T1, 1, run_id_external="ext-42"),
            agent(T1, 3, 1, agent_name="sub"),
            llm(T1, 4, 3),
            llm(T1, 2, 1),
        ],
    )
    d.step()
    f.step()  # the top run "triage" is mapped: one traced event; "sub" is not
    at = datetime.fromtimestamp((T0 + 50 * S) / S, UTC)
    top, sub = T1 + sid(1), T1 + sid(3)
    track_event(store, "acme", "evt_1", at, run_id=top)
    track_event(store, "acme", "evt_2", at, run_id="ext-42")  # the framework's run id
    track_event(store, "acme", "evt_3", at, trace_id=T1)  # the trace: its top run
    track_event(store, "acme", "evt_4", at, trace_id=T1, span_id=sid(4))  # a span of "sub"
    track_event(store, "acme", "evt_5", at, trace_id=T1, span_id="f" * 16)  # not in the trace
    track_event(store, "globex", "evt_6", at, run_id=top)  # another org's
    track_event(store, "acme", "evt_7", at - timedelta(days=2), run_id=top)  # before the run
    store.call(roi_store.create_in)

    def linked(run_id: str) -> dict[str, Any]:
        detail = qr.get_run(store, "acme", run_id)
        assert detail is not None
        return rs.run_roi(run_roi(store, "acme", detail))

    roi = linked(top)
    traced = [e["event_id"] for e in roi["events"] if e["source"] == "traced_run"]
    assert len(traced) == 1
    assert sorted(e["event_id"] for e in roi["events"] if e["source"] == "track") == [
        "evt_1", "evt_2", "evt_3", "evt_5",
    ]  # fmt: skip
    [own] = [e for e in roi["events"] if e["source"] == "traced_run"]
    assert roi["hours_saved"] == round(4 * 0.066 + own["hours_saved"], 3)
    assert roi["cost_saved"] == round(4 * 3.3 + own["cost_saved"], 2)
    assert roi["currency"] == "USD"
    assert [e["event_id"] for e in linked(sub)["events"]] == ["evt_4"]


def test_a_run_without_events_shows_zeros() -> None:
    empty = rs.run_roi([])
    assert empty == {
        "events": [], "hours_saved": 0.0, "cost_saved": 0.0, "net_saved": 0.0, "currency": None,
    }  # fmt: skip
