"""Output rules on traced runs: a rule naming a workflow evaluates each finished run's final
output, and its verdict shows in GET /api/logs as a log linked to the run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.e2e.server import KEYS, make_server
from tests.fixtures.fake_judges import KEY as JUDGE_KEY
from tests.fixtures.fake_judges import FakeJudges

INGEST, ADMIN = KEYS[("acme", "ingest")], KEYS[("acme", "admin")]


def run_span(trace: str, span: str, agent: str, output: str, t0: int) -> dict[str, object]:
    attrs = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent,
        "output.value": output,
    }
    return {
        "traceId": trace,
        "spanId": span,
        "name": f"invoke_agent {agent}",
        "kind": 1,
        "startTimeUnixNano": str(t0),
        "endTimeUnixNano": str(t0 + 10**9),
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()],
    }


def test_a_workflow_rule_evaluates_finished_runs(tmp_path: Path) -> None:
    server = make_server(tmp_path).start()
    try:
        base, h = server.base_url, {"Authorization": f"Bearer {ADMIN}"}
        rule = {
            "name": "No refunds",
            "type": "keyword_forbidden",
            "value": "refund",
            "workflowName": "refund-bot",
        }
        r = httpx.post(f"{base}/api/rules", headers=h, json=rule)
        assert r.status_code == 201 and r.json()["scope"] == "workflow", r.text
        t0 = time.time_ns() - 5 * 10**9
        spans = [
            run_span("a" * 32, "1" * 16, "refund-bot", "We will refund you today.", t0),
            run_span("b" * 32, "2" * 16, "refund-bot", "Your order has shipped.", t0),
            run_span("c" * 32, "3" * 16, "other-bot", "A refund is coming.", t0),
        ]
        body = {
            "resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": spans}]}]
        }
        r = httpx.post(
            f"{base}/v1/traces",
            content=json.dumps(body),
            headers={"Authorization": f"Bearer {INGEST}", "Content-Type": "application/json"},
        )
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 30
        while True:
            listed = httpx.get(f"{base}/api/logs", headers=h, params={"project": "refund-bot"})
            found = listed.json()["executions"]
            if len(found) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        by_output = {e["outputPreview"]: e for e in found}
        assert by_output["We will refund you today."]["status"] == "flagged"
        assert by_output["Your order has shipped."]["status"] == "pass"
        run_id = by_output["We will refund you today."]["runId"]
        assert run_id and run_id.startswith("a" * 32)
        one = httpx.get(f"{base}/api/logs", headers=h, params={"runId": run_id}).json()
        assert one["total"] == 1
        # The other workflow's run is not evaluated: the rule names refund-bot only.
        assert httpx.get(f"{base}/api/logs", headers=h).json()["total"] == 2
        # The verdict shows on the run in the read API too.
        read = {"Authorization": f"Bearer {KEYS[('acme', 'read')]}"}
        detail = httpx.get(f"{base}/api/runs/{run_id}", headers=read).json()
        assert [(e["status"], e["id"]) for e in detail["evaluations"]] == [
            ("flagged", by_output["We will refund you today."]["id"])
        ]
        other = httpx.get(f"{base}/api/runs/{'c' * 32}{'3' * 16}", headers=read).json()
        assert other["evaluations"] == []
    finally:
        server.stop()


def test_a_judge_rule_on_a_workflow_is_judged_in_the_background(tmp_path: Path) -> None:
    with FakeJudges() as judges:
        extra = f"judge: {{timeout_s: 2, retries: 0, base_urls: {{openai: {judges.base_url!r}}}}}\n"
        server = make_server(tmp_path, extra).start()
        try:
            base, h = server.base_url, {"Authorization": f"Bearer {ADMIN}"}
            settings = {"openaiApiKey": JUDGE_KEY, "defaultJudgeProvider": "openai"}
            assert httpx.patch(f"{base}/api/settings", headers=h, json=settings).status_code == 200
            rule = {
                "name": "Polite",
                "type": "llm_judge",
                "value": "Is it polite?",
                "workflowName": "judge-bot",
            }
            assert httpx.post(f"{base}/api/rules", headers=h, json=rule).status_code == 201
            judges.queue("fail")
            span = run_span("d" * 32, "4" * 16, "judge-bot", "Go away.", time.time_ns() - 10**9)
            body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
            r = httpx.post(
                f"{base}/v1/traces",
                content=json.dumps(body),
                headers={"Authorization": f"Bearer {INGEST}", "Content-Type": "application/json"},
            )
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 30
            while True:
                found = httpx.get(f"{base}/api/logs", headers=h).json()["executions"]
                if (found and found[0]["status"] != "pending") or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert [(e["status"], e["projectName"]) for e in found] == [("flagged", "judge-bot")]
            assert "Go away." in json.dumps(judges.bodies()[-1])
        finally:
            server.stop()
