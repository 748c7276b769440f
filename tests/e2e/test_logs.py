"""Output evaluation against the real server: the doc's curl examples run as written (only the
base URL and the token changed), the n8n / Make gate bodies,
idempotent ids, review and listing (the rest: `test_logs_api.py`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from typing import Any

import httpx
import pytest

from tests.e2e.server import KEYS, Server, make_server

INGEST, ADMIN, READ = (KEYS[("acme", s)] for s in ("ingest", "admin", "read"))
OTHER = KEYS[("globex", "admin")]
DOC = "https://tracira.com"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def curl(server: Server, command: str, token: str, **subs: str) -> tuple[int, Any]:
    """Run one of the doc's curl commands with only the base URL, the token (and a path id)
    changed; (status, parsed JSON body or raw text)."""
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed; the doc's examples are curl commands")
    command = command.replace(DOC, server.base_url).replace("YOUR_TOKEN", token)
    for name, value in subs.items():
        command = command.replace(name, value)
    out = subprocess.run(
        ["bash", "-c", command.replace("curl ", 'curl -sS -w "\\n%{http_code}" ', 1)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, status = out.stdout.rsplit("\n", 1)
    try:
        return int(status), json.loads(body)
    except ValueError:
        return int(status), body


def wait_status(server: Server, log_id: str, key: str = INGEST, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{server.base_url}/api/logs/{log_id}/status", headers=auth(key))
        assert r.status_code == 200, r.text
        if r.json()["status"] != "pending" or time.monotonic() > deadline:
            return r.json()
        time.sleep(0.1)


def rotate(server: Server) -> str:
    r = httpx.post(f"{server.base_url}/api/settings/rotate-token", headers=auth(ADMIN))
    assert r.status_code == 200, r.text
    token = r.json()["webhookToken"]
    assert token.startswith("wh-")
    return str(token)


QUICK_START = """curl -X POST https://tracira.com/api/logs \\
-H "Authorization: Bearer YOUR_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"project": "my-first-project",
"output": "Here is my AI-generated response."
}'"""
ANY_CLIENT = """curl -X POST https://tracira.com/api/logs \\
-H "Authorization: Bearer YOUR_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"project": "my-project",
"output": "The AI-generated text.",
"sync": true
}'"""
SUBMIT = """curl -X POST https://tracira.com/api/logs \\
-H "Authorization: Bearer YOUR_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"project": "support-replies",
"output": "The AI-generated text to evaluate."
}'"""
GET = 'curl -X GET https://tracira.com/api/logs{path} \\\n-H "Authorization: Bearer YOUR_TOKEN"'
DELETE = 'curl -X DELETE https://tracira.com/api/{path} \\\n-H "Authorization: Bearer YOUR_TOKEN"'
DECISION = """curl -X PATCH https://tracira.com/api/logs/ID/decision \\
-H "Authorization: Bearer YOUR_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"decision": "approved"
}'"""
BULK = """curl -X PATCH https://tracira.com/api/logs/bulk \\
-H "Authorization: Bearer YOUR_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"ids": "<ids>",
"action": "approve"
}'"""
CREATE_PROJECT = """curl -X POST https://tracira.com/api/projects \\
-H "Authorization: Bearer YOUR_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"name": "<name>"
}'"""
PATCH_PROJECT = """curl -X PATCH https://tracira.com/api/projects/ID \\
-H "Authorization: Bearer YOUR_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"name": "<name>",
"icon": "<icon>",
"merge": true
}'"""
CREATE_TASK = CREATE_PROJECT.replace("/api/projects", "/api/projects/ID/tasks")
DELETE_TASK = """curl -X DELETE "https://tracira.com/api/projects/ID/tasks?taskName=<taskName>" \\
-H "Authorization: Bearer YOUR_TOKEN\""""
CREATE_RULE = """curl -X POST https://tracira.com/api/rules \\
-H "Authorization: Bearer YOUR_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"name": "<name>",
"type": "keyword_required",
"value": "<value>",
"description": "<description>",
"isActive": true
}'"""
PATCH_RULE = """curl -X PATCH https://tracira.com/api/rules/ID \\
-H "Authorization: Bearer YOUR_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"name": "<name>",
"type": "keyword_required",
"description": "<description>",
"value": "<value>",
"isActive": true
}'"""
EVALUATE = """curl -X POST https://tracira.com/api/rules/evaluate \\
-H "Authorization: Bearer YOUR_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"output": "<output>",
"rule": "<rule>",
"confidence": 0
}'"""
PATCH_SETTINGS = """curl -X PATCH https://tracira.com/api/settings \\
-H "Authorization: Bearer YOUR_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"onboardingDismissed": true,
"workspaceName": "<workspaceName>",
"slackWebhookUrl": "<slackWebhookUrl>",
"notifyOnFlag": true,
"notifyOnFail": true
}'"""
ROTATE = """curl -X POST https://tracira.com/api/settings/rotate-token \\
-H "Authorization: Bearer YOUR_TOKEN\""""
SIMPLE_GET = 'curl -X GET https://tracira.com/api/{path} \\\n-H "Authorization: Bearer YOUR_TOKEN"'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = make_server(tmp_path_factory.mktemp("logs")).start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            assert s.stop() == 0


def test_the_docs_curl_examples_as_written(server: Server) -> None:
    token = rotate(server)
    status, body = curl(server, QUICK_START, token)
    assert status == 200 and body["ok"] is True and body["status"] == "pending"
    first = body["id"]
    status, body = curl(server, ANY_CLIENT, token)
    assert (status, body["status"]) == (200, "pass")  # no rules yet
    status, body = curl(server, SUBMIT, token)
    assert status == 200 and body["status"] == "pending"
    assert wait_status(server, body["id"], token)["verdict"] == "pass"

    status, listed = curl(server, GET.format(path=""), token)
    assert status == 200 and listed["total"] == 3 and len(listed["executions"]) == 3
    assert set(listed["summary"]) == {
        "totalRuns",
        "failuresDetected",
        "pendingReviews",
        "successRate",
    }
    assert {"id", "timestamp", "status", "projectId", "projectName", "taskName"} <= set(
        listed["executions"][0]
    )
    status, one = curl(server, GET.format(path="/ID"), token, ID=first)
    assert status == 200 and one["id"] == first and one["workspaceId"] == "acme"
    assert one["output"] == "Here is my AI-generated response."
    status, polled = curl(server, GET.format(path="/ID/status"), token, ID=first)
    assert status == 200 and set(polled) >= {
        "id",
        "status",
        "verdict",
        "confidenceScore",
        "explanation",
        "humanDecision",
    }
    status, decided = curl(server, DECISION, token, ID=first)
    assert status == 200 and decided == {"ok": True, "decidedBy": token.split("_")[0]}
    assert curl(server, BULK, token) == (200, {"ok": True, "count": 0})  # "<ids>": no such log
    status, names = curl(server, GET.format(path="/tasks"), token)
    assert status == 200 and names == []

    status, project = curl(server, CREATE_PROJECT, token)
    assert status == 201 and project["name"] == "<name>" and project["executionCount"] == 0
    pid = project["id"]
    status, task = curl(server, CREATE_TASK, token, ID=pid)
    assert status == 201 and task["projectId"] == pid and task["name"] == "<name>"
    status, tasks = curl(server, SIMPLE_GET.format(path="projects/ID/tasks"), token, ID=pid)
    assert status == 200 and [t["name"] for t in tasks] == ["<name>"]
    status, _ = curl(server, PATCH_PROJECT, token, ID=pid)  # renames to its own name, icon set
    assert status == 200
    status, projects = curl(server, SIMPLE_GET.format(path="projects"), token)
    assert {p["name"]: p["icon"] for p in projects}["<name>"] == "<icon>"
    status, gone = curl(server, DELETE_TASK, token, ID=pid)
    assert (status, gone) == (404, gone)  # taskName=<taskName>: no such task
    assert gone["code"] == "not_found"

    status, rule = curl(server, CREATE_RULE, token)
    assert status == 201 and rule["type"] == "keyword_required" and rule["isActive"] is True
    status, rules = curl(server, SIMPLE_GET.format(path="rules"), token)
    assert status == 200 and [r["id"] for r in rules] == [rule["id"]]
    status, got = curl(server, SIMPLE_GET.format(path="rules/ID"), token, ID=rule["id"])
    assert status == 200 and got["value"] == "<value>"
    assert curl(server, PATCH_RULE, token, ID=rule["id"]) == (200, {"ok": True})
    status, body = curl(server, EVALUATE, token)
    assert status == 404 and body["code"] == "not_found"  # "rule": "<rule>" names no rule
    status, body = curl(server, EVALUATE.replace('"<rule>"', f'"{rule["id"]}"'), token)
    assert status == 200 and body["verdict"] == "flagged"  # "<output>" lacks "<value>"
    assert body["appliedRules"][0]["outcome"] == "triggered"
    assert curl(server, DELETE.format(path="rules/ID"), token, ID=rule["id"]) == (200, {"ok": True})

    status, settings = curl(server, SIMPLE_GET.format(path="settings"), token)
    assert status == 200 and settings["id"] == "acme" and "usage" in settings
    assert settings["canManageWorkspace"] is True
    status, body = curl(server, PATCH_SETTINGS, token)
    assert status == 422 and body["details"][0]["field"] == "slackWebhookUrl"
    status, body = curl(
        server, PATCH_SETTINGS.replace('"<slackWebhookUrl>"', '""'), token
    )  # a real client sends a URL or leaves it blank
    assert (status, body) == (200, {"ok": True})
    status, verified = curl(server, SIMPLE_GET.format(path="verify"), token)
    assert (status, verified) == (200, {"workspaceName": "<workspaceName>"})
    status, models = curl(server, SIMPLE_GET.format(path="models"), token)
    assert status == 200 and {"label", "value"} <= set(models[0])

    assert curl(server, DELETE.format(path="logs/ID"), token, ID=first) == (200, {"ok": True})
    assert curl(server, GET.format(path="/ID"), token, ID=first)[0] == 404
    assert curl(server, DELETE.format(path="projects/ID"), token, ID=pid) == (
        200,
        {"success": True},
    )
    status, new = curl(server, ROTATE, token)
    assert status == 200 and new["webhookToken"] != token
    assert curl(server, SIMPLE_GET.format(path="verify"), token)[0] == 401  # old one stops
    assert curl(server, SIMPLE_GET.format(path="verify"), new["webhookToken"])[0] == 200


def test_the_n8n_gate_body_as_written(server: Server) -> None:
    base, n8n = (
        server.base_url,
        {
            "project": "support-replies",
            "output": "{{ $json.aiOutput }}",
            "task": "Tone Validator",
            "sync": True,
        },
    )
    r = httpx.post(f"{base}/api/logs", headers=auth(INGEST), json=n8n)
    assert r.status_code == 200 and r.json()["status"] == "pass"  # the IF node's true branch
    rule = {
        "name": "Tone Validator",
        "type": "keyword_forbidden",
        "value": "aiOutput",
        "projectName": "support-replies",
        "taskName": "Tone Validator",
    }
    assert httpx.post(f"{base}/api/rules", headers=auth(ADMIN), json=rule).status_code == 201
    r = httpx.post(f"{base}/api/logs", headers=auth(INGEST), json=n8n)
    body = r.json()
    assert body["status"] == "flagged"  # false branch: notify or stop
    assert body["verdict"] == {
        "pass": False,
        "rules": [{**body["verdict"]["rules"][0], "name": "Tone Validator", "triggered": True}],
    }
    # Make's module: the same rule, another task → not covered; sync left blank → pending.
    make = {"project": "support-replies", "output": "aiOutput", "task": "Other"}
    r = httpx.post(f"{base}/api/logs", headers=auth(INGEST), json={**make, "sync": ""})
    assert r.json()["status"] == "pending"
    assert wait_status(server, r.json()["id"])["verdict"] == "pass"


def test_review_listing_and_idempotent_ids(server: Server) -> None:
    base = server.base_url
    rule = {
        "name": "Needs order",
        "type": "regex_match",
        "value": r"ORD-\d+",
        "projectName": "shop",
    }
    assert httpx.post(f"{base}/api/rules", headers=auth(ADMIN), json=rule).status_code == 201
    ids = []
    for i, (out, tags) in enumerate([("ORD-1 shipped", "a"), ("no order", "a,b"), ("x", "c")]):
        body = {
            "project": "shop",
            "task": f"t{i % 2}",
            "output": out,
            "sync": True,
            "id": f"run-{i}",
            "tags": tags,
            "customerId": f"cust-{i}",
            "userId": "u1",
            "threadId": "s9",
            "model": "gpt-4o",
            "latencyMs": 100 * (i + 1),
            "costUsd": 0.01,
            "timestamp": f"2026-01-0{i + 1}T10:00:00Z",
        }
        r = httpx.post(f"{base}/api/logs", headers=auth(INGEST), json=body)
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    assert ids == ["run-0", "run-1", "run-2"]
    again = httpx.post(
        f"{base}/api/logs",
        headers=auth(INGEST),
        json={"project": "shop", "output": "ORD-1 shipped", "id": "run-1"},
    )
    assert again.json()["status"] == "flagged"  # the stored log's verdict, not a new log

    def listed(**params: Any) -> Any:
        r = httpx.get(f"{base}/api/logs", headers=auth(READ), params=params)
        assert r.status_code == 200, r.text
        return r.json()

    everything = listed(project="shop")
    assert everything["total"] == 3
    assert everything["summary"] == {
        "totalRuns": 3,
        "failuresDetected": 2,
        "pendingReviews": 2,
        "successRate": 33.3,
    }
    assert [
        e["id"] for e in listed(project="shop", sortBy="latencyMs", sortDir="asc")["executions"]
    ] == ids
    assert [e["id"] for e in listed(project="shop", tags="b,c")["executions"]] == ["run-2", "run-1"]
    assert listed(q="CUST-2")["total"] == 1 and listed(subjectId="cust-0")["total"] == 1
    assert listed(actorId="u1", sessionId="s9", project="shop")["total"] == 3
    assert listed(project="shop", status="flagged")["total"] == 2
    assert listed(project="shop", to="2026-01-01T23:00:00Z")["total"] == 1
    page = listed(project="shop", limit=2, page=2)
    assert (page["page"], page["limit"], len(page["executions"])) == (2, 2, 1)
    bad = httpx.get(f"{base}/api/logs", headers=auth(READ), params={"sortBy": "nope"})
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "sortBy"

    pending = listed(pending="true", project="shop")["executions"]
    assert {e["id"] for e in pending} == {"run-1", "run-2"}
    r = httpx.patch(
        f"{base}/api/logs/run-1/decision", headers=auth(ADMIN), json={"decision": "rejected"}
    )
    assert r.json() == {"ok": True, "decidedBy": "al_admin_aaaa0003"}
    assert [e["id"] for e in listed(pending="true", project="shop")["executions"]] == ["run-2"]
    status = httpx.get(f"{base}/api/logs/run-1/status", headers=auth(INGEST)).json()
    assert (status["humanDecision"], status["decidedBy"]) == ("rejected", "al_admin_aaaa0003")
    bulk = {"ids": ["run-2", "run-0", "missing"], "action": "approve"}
    assert httpx.patch(f"{base}/api/logs/bulk", headers=auth(ADMIN), json=bulk).json() == {
        "ok": True,
        "count": 2,
    }
    assert listed(pending="true", project="shop")["total"] == 0
    wrong = httpx.patch(
        f"{base}/api/logs/run-0/decision", headers=auth(INGEST), json={"decision": "approved"}
    )
    assert wrong.status_code == 401  # an ingest key does not review
    assert httpx.get(
        f"{base}/api/logs/tasks", headers=auth(READ), params={"project": "shop"}
    ).json() == ["t0", "t1"]
    bulk = {"ids": ["run-2"], "action": "delete"}
    assert httpx.patch(f"{base}/api/logs/bulk", headers=auth(ADMIN), json=bulk).json()["count"] == 1
    assert listed(project="shop")["total"] == 2
