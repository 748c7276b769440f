"""Tests for the pages (`collector/ui/dashboard.py`, `review.py`, `alerts.py`) on a real store
through Starlette's TestClient: what each page shows is what its API route answers, an unpriced
call is never $0, bad filters are shown not crashed on, another org's run is a 404 page, and
decisions, resolutions and rule switches go through the API's code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from collector.alerts import store as alerts_store
from collector.evals import store as ls
from collector.runs.upkeep import fill_run_tools
from tests.collector.store.test_query import T0, insert, rid, run_row, span, span_run
from tests.collector.ui.uihelp import ADMIN, READ, Ui, csrf_of, ui_app


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    with ui_app(tmp_path_factory.mktemp("pages"), now=T0 + timedelta(days=1)) as u:
        root = span(1, 0, "agent", 0.0, span_id=f"{1:016x}", agent_name="triage")
        llm = span(
            1,
            1,
            "llm",
            0.1,
            parent_span_id=root["span_id"],
            model="gpt-4o",
            input_tokens=1200,
            output_tokens=80,
            cache_read_tokens=1000,
            cost_usd=0.0038,
            cost_source="computed",
            input_text="Where is A-1042?",
        )
        tool = span(
            1,
            2,
            "tool",
            0.2,
            parent_span_id=llm["span_id"],
            tool_name="lookup",
            tool_args='{"order": "<A-1042>"}',
            tool_result="shipped",
        )
        free = span(2, 1, "llm", 0.1, model="mystery-model", cost_source="none", input_tokens=5)
        insert(u.store, "spans", [root, llm, tool, free])
        insert(u.store, "span_runs", [span_run(s, rid(1)) for s in (root, llm, tool)])
        insert(u.store, "span_runs", [span_run(free, rid(2))])
        unpriced = run_row(2, workflow_name="billing", cost_usd=0.0, cost_unknown_calls=1)
        insert(u.store, "runs", [run_row(1), unpriced, run_row(3, org="globex", status="error")])
        u.store.call(fill_run_tools)  # the tool-call rows the deriver writes beside each run
        yield u


@pytest.fixture(scope="module")
def reader(ui: Ui) -> TestClient:
    return ui.sign_in(READ, TestClient(ui.client.app))


@pytest.fixture(scope="module")
def admin(ui: Ui) -> TestClient:
    return ui.sign_in(ADMIN, TestClient(ui.client.app))


def test_the_run_list_and_its_filters(reader: TestClient) -> None:
    page = reader.get("/ui/runs").text
    assert "2 runs match" in page
    assert f'href="/ui/runs/{rid(1)}"' in page and f'href="/ui/runs/{rid(3)}"' not in page
    assert "1 call unpriced" in page  # the billing run: not "$0"
    only = reader.get("/ui/runs", params={"workflow": "billing"}).text
    assert "1 run match" in only and rid(2) in only and rid(1) not in only
    paged = reader.get("/ui/runs", params={"limit": "20", "sort": "cost_desc"}).text
    assert paged.index(rid(1)) < paged.index(rid(2))
    bad = reader.get("/ui/runs", params={"cost_min": "lots", "status": "nope"})
    assert bad.status_code == 422
    assert "cost_min" in bad.text and "unknown value nope" in bad.text


def test_a_runs_page_has_its_waterfall(reader: TestClient) -> None:
    page = reader.get(f"/ui/runs/{rid(1)}").text
    steps = page.split('<ol class="wf-steps">')[1].split("</ol>")[0]
    assert steps.count("<li") == 3
    assert steps.index("triage") < steps.index("gpt-4o") < steps.index("lookup")
    assert "d2" in steps.split("lookup")[0].rsplit("<li", 1)[1]  # the tool nests in the call
    assert "cached read 1,000" in steps and "cost_source: computed" in steps
    assert "&lt;A-1042&gt;" in steps and "<A-1042>" not in steps  # escaped
    unpriced = reader.get(f"/ui/runs/{rid(2)}").text
    assert "unpriced" in unpriced and "cost_source: none" in unpriced


def test_another_orgs_run_is_a_404_page(reader: TestClient) -> None:
    r = reader.get(f"/ui/runs/{rid(3)}")
    assert r.status_code == 404 and "Not found" in r.text
    assert reader.get("/ui/runs/not-a-run").status_code == 404
    assert reader.get("/ui/workflows/nope").status_code == 404


def test_overview_and_workflows(reader: TestClient) -> None:
    page = reader.get("/ui/").text
    assert page.count('<svg class="chart"') == 2 and "triage" in page and "billing" in page
    workflows = reader.get("/ui/workflows").text
    assert 'href="/ui/workflows/triage"' in workflows and "globex" not in workflows
    one = reader.get("/ui/workflows/triage").text
    assert "lookup" in one and one.count('<svg class="chart"') == 3


def _log(ui: Ui, log_id: str, org: str = "acme") -> None:
    row = {
        "org": org,
        "id": log_id,
        "project": "support",
        "task": "reply",
        "status": "flagged",
        "created_at": T0,
        "received_at": T0,
        "seq": 1,
        "output": f"refund {log_id}",
        "input": json.dumps("why?"),
        "rules": json.dumps(
            [
                {
                    "ruleId": "r",
                    "ruleName": "No refunds",
                    "ruleType": "keyword_forbidden",
                    "triggered": True,
                    "outcome": "flagged",
                    "explanation": "contains refund",
                }
            ]
        ),
    }
    ui.store.call(lambda cur: ls.insert(cur, "eval_logs", row))


def test_review_decisions_go_through_the_apis_code(ui: Ui, reader: TestClient) -> None:
    for log_id in ("l1", "l2", "l3"):
        _log(ui, log_id)
    _log(ui, "g1", org="globex")
    page = reader.get("/ui/review").text
    assert "refund l1" in page and "No refunds" in page and "refund g1" not in page
    assert ">Approve</button>" not in page  # a read key reads, never decides
    forged = reader.post(
        "/ui/review", data={"csrf": csrf_of(page, "/ui/review"), "one": "approve:l1"}
    )
    assert forged.status_code == 403

    admin = ui.sign_in(ADMIN, TestClient(ui.client.app))
    page = admin.get("/ui/review").text
    csrf = csrf_of(page, "/ui/review")
    r = admin.post("/ui/review", data={"csrf": csrf, "one": "approve:l1"}, follow_redirects=False)
    assert r.status_code == 303 and "decided=1" in r.headers["location"]
    r = admin.post("/ui/review", data={"csrf": csrf, "bulk": "reject", "ids": ["l2", "l3", "g1"]})
    assert "2 logs rejected" in r.text
    rows = ui.store.query("SELECT id, decision, decided_by FROM eval_logs ORDER BY id")
    assert rows == [
        ("g1", None, None),
        ("l1", "approved", "al_admin_aaaa0003"),
        ("l2", "rejected", "al_admin_aaaa0003"),
        ("l3", "rejected", "al_admin_aaaa0003"),
    ]
    missing = admin.post("/ui/review", data={"csrf": csrf, "one": "approve:g1"})
    assert missing.status_code == 404


def test_alerts_resolve_and_rule_switch(ui: Ui, admin: TestClient, reader: TestClient) -> None:
    def seed(cur: object) -> None:
        rule = alerts_store.RuleRecord(
            "acme",
            "ar_1",
            "Costly run",
            {
                "name": "Costly run",
                "condition": "run_cost",
                "threshold": 0.5,
                "enabled": True,
                "channels": [],
            },
            "api",
            T0,
            T0,
        )
        alerts_store.put_rule(cur, rule)  # type: ignore[arg-type]
        cur.execute(  # type: ignore[attr-defined]
            "INSERT INTO alert_events VALUES ('acme', 'ev_1', 'ar_1', 'Costly run', 'run_cost',"
            " 'run', ?, 'triage', 'firing', 0.9, 0.5, true, NULL, NULL, NULL, ?)",
            [rid(1), T0],
        )

    ui.store.call(seed)
    feed = reader.get("/ui/alerts").text
    assert "Costly run" in feed and "needs an admin key" in feed and ">Resolve</button>" not in feed
    page = admin.get("/ui/alerts").text  # the admin key alone: rules, no feed
    assert "needs a read key" in page and "Disable" in page
    ui.sign_in(READ, admin)
    page = admin.get("/ui/alerts").text
    csrf = csrf_of(page, "/ui/alerts/events/ev_1/resolve")
    assert admin.post("/ui/alerts/events/ev_1/resolve", data={"csrf": csrf}).status_code == 200
    assert ui.store.query("SELECT resolved_by FROM alert_events") == [("manual",)]
    assert admin.post("/ui/alerts/rules/ar_1/disable", data={"csrf": csrf}).status_code == 200
    assert ui.store.query("SELECT enabled FROM alert_rules") == [(False,)]
    assert admin.post("/ui/alerts/rules/nope/enable", data={"csrf": csrf}).status_code == 404
