"""Output evaluation against the real server, continued: orgs kept apart, validation errors,
merging and deleting projects, the rate limit, and pending logs evaluated across a crash.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.server import KEYS, Server, make_server
from tests.e2e.test_logs import ADMIN, INGEST, OTHER, auth, server, wait_status

__all__ = ["server"]  # the module's server fixture, as test_logs starts it


def test_other_orgs_see_nothing(server: Server) -> None:
    base = server.base_url
    r = httpx.post(f"{base}/api/logs", headers=auth(INGEST), json={"project": "p", "output": "x"})
    log_id = r.json()["id"]
    for method, path in (
        ("GET", f"/api/logs/{log_id}"),
        ("GET", f"/api/logs/{log_id}/status"),
        ("DELETE", f"/api/logs/{log_id}"),
    ):
        assert httpx.request(method, base + path, headers=auth(OTHER)).status_code == 404
    assert httpx.get(f"{base}/api/logs", headers=auth(OTHER)).json()["total"] == 0
    projects = httpx.get(f"{base}/api/projects", headers=auth(ADMIN)).json()
    pid = next(p["id"] for p in projects if p["name"] == "p")
    assert httpx.delete(f"{base}/api/projects/{pid}", headers=auth(OTHER)).status_code == 404
    assert httpx.get(f"{base}/api/logs/{log_id}", headers=auth(ADMIN)).status_code == 200
    assert httpx.post(f"{base}/api/logs", json={"project": "p", "output": "x"}).status_code == 401
    assert httpx.get(f"{base}/api/logs", headers=auth(INGEST)).status_code == 401  # no reads


def test_validation_errors_say_what_is_wrong(server: Server) -> None:
    base = server.base_url
    bad = {
        "project": "",
        "output": "x" * 50_001,
        "confidence": 2,
        "callbackEvents": "often",
        "input": [{"type": "video"}],
        "timestamp": "yesterday",
        "sync": "maybe",
    }
    r = httpx.post(f"{base}/api/logs", headers=auth(INGEST), json=bad)
    assert r.status_code == 422
    fields = {d["field"] for d in r.json()["details"]}
    assert fields == {
        "project",
        "output",
        "confidence",
        "callbackEvents",
        "input[0].type",
        "timestamp",
        "sync",
    }
    ok = {
        "project": "p",
        "output": "x" * 50_000,
        "input": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ],
    }
    assert httpx.post(f"{base}/api/logs", headers=auth(INGEST), json=ok).status_code == 200
    for rule, field in (
        ({"name": "r", "type": "regex_match", "value": "(a)\\1"}, "value"),
        ({"name": "r", "type": "length_limit", "value": "lots"}, "value"),
        ({"name": "r", "type": "json_field", "value": "a..b"}, "value"),
        ({"name": "r", "type": "sentiment", "value": "x"}, "type"),
        ({"type": "llm_judge", "value": "Is it polite?", "llmJudgeProvider": "x"}, "name"),
    ):
        r = httpx.post(f"{base}/api/rules", headers=auth(ADMIN), json=rule)
        assert r.status_code == 422, r.text
        assert field in {d["field"] for d in r.json()["details"]}, r.json()


def test_merge_and_delete_cascade(server: Server) -> None:
    base, h = server.base_url, auth(ADMIN)
    for project, task in (("old", "a"), ("old", "b"), ("new", "b")):
        httpx.post(
            f"{base}/api/logs",
            headers=auth(INGEST),
            json={"project": project, "task": task, "output": "hi", "sync": True},
        )
    rule = {"name": "r", "type": "length_limit", "value": "100", "projectName": "old"}
    rule_id = httpx.post(f"{base}/api/rules", headers=h, json=rule).json()["id"]
    projects = {p["name"]: p for p in httpx.get(f"{base}/api/projects", headers=h).json()}
    old, new = projects["old"]["id"], projects["new"]["id"]
    r = httpx.patch(f"{base}/api/projects/{old}", headers=h, json={"name": "new"})
    assert r.status_code == 409
    r = httpx.patch(f"{base}/api/projects/{old}", headers=h, json={"name": "new", "merge": True})
    assert r.status_code == 200 and r.json()["id"] == new and r.json()["executionCount"] == 3
    tasks = httpx.get(f"{base}/api/projects/{new}/tasks", headers=h).json()
    assert sorted(t["name"] for t in tasks) == ["a", "b"]
    assert httpx.get(f"{base}/api/rules/{rule_id}", headers=h).json()["projectId"] == new
    assert httpx.get(f"{base}/api/projects/{old}/tasks", headers=h).status_code == 404
    r = httpx.delete(f"{base}/api/projects/{new}/tasks", headers=h, params={"taskName": "b"})
    assert r.json() == {"success": True}
    assert httpx.get(f"{base}/api/logs", headers=h, params={"project": "new"}).json()["total"] == 1
    assert (
        httpx.patch(
            f"{base}/api/projects/{new}", headers=h, json={"icon": "🚀", "name": "newer"}
        ).status_code
        == 200
    )
    logs = httpx.get(f"{base}/api/logs", headers=h, params={"project": "newer"}).json()
    assert logs["total"] == 1 and logs["executions"][0]["projectName"] == "newer"
    assert httpx.delete(f"{base}/api/projects/{new}", headers=h).json() == {"success": True}
    assert httpx.get(f"{base}/api/rules/{rule_id}", headers=h).status_code == 404
    assert httpx.get(f"{base}/api/logs", headers=h, params={"project": new}).json()["total"] == 0


def test_rate_limit(server: Server) -> None:
    base, body = server.base_url, {"project": "rl", "output": "x"}
    with httpx.Client(headers=auth(KEYS[("globex", "ingest")])) as client:
        codes = [client.post(f"{base}/api/logs", json=body).status_code for _ in range(60)]
        assert codes == [200] * 60
        r = client.post(f"{base}/api/logs", json=body)
    assert r.status_code == 429 and r.headers["retry-after"] == "60"
    assert r.json() == {"error": "Too many requests. Please slow down and try again shortly."}


def test_pending_logs_survive_a_crash(tmp_path: Path) -> None:
    server = make_server(tmp_path).start()
    try:
        rule = {"name": "len", "type": "length_limit", "value": "5"}
        assert (
            httpx.post(f"{server.base_url}/api/rules", headers=auth(ADMIN), json=rule).status_code
            == 201
        )
        ids = []
        with httpx.Client(headers=auth(INGEST)) as client:
            for i in range(30):
                r = client.post(
                    f"{server.base_url}/api/logs", json={"project": "c", "output": "x" * i}
                )
                ids.append(r.json()["id"])
        server.kill()  # some may still be pending: acknowledged means committed
        pending = server.query("SELECT count(*) FROM eval_logs WHERE status = 'pending'")[0][0]
        assert server.query("SELECT count(*) FROM eval_logs")[0][0] == 30
        server.start()
        verdicts = [wait_status(server, i)["verdict"] for i in ids]
        assert verdicts == ["pass"] * 6 + ["flagged"] * 24, pending
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
