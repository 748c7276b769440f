"""Issue 20's 500s on the JSON APIs, on a real server: each input now gets a 4xx in its API's
JSON shape, the keep-alive connection survives, and the project that a NUL task name used to
break keeps working.
"""

from __future__ import annotations

import gzip

import httpx

from tests.e2e.server import KEYS, Server

INGEST, READ, ADMIN = (KEYS[("acme", s)] for s in ("ingest", "read", "admin"))


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def test_poison_inputs_are_4xx_and_the_connection_stays(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        cases: list[tuple[str, str, str, bytes, dict[str, str], int]] = [
            ("POST", "/api/logs", INGEST, b'{"project":"p","task":"\\u0000","output":"x"}', {},
             422),
            ("POST", "/api/projects", ADMIN, b'{"name":"a\\u0000"}', {}, 422),
            ("POST", "/api/rules", ADMIN,
             b'{"name":"r","type":"keyword_required","value":"x","projectName":"\\u0000"}', {},
             422),
            ("POST", "/api/rules/evaluate", INGEST,
             b'{"output":"\\ud800","rule":{"type":"keyword_required","value":"x"}}', {}, 422),
            ("PATCH", "/api/logs/bulk", ADMIN, b'{"ids":["a"],"action":["approve"]}', {}, 422),
            ("POST", "/api/keys", ADMIN, b"[" * 100_000, {}, 422),
            ("POST", "/api/keys", ADMIN, b'{"scope":"read"}', {"Content-Type": "text/plain"}, 415),
            ("POST", "/api/keys", ADMIN, b"not gzip", {"Content-Encoding": "gzip"}, 400),
            ("PUT", "/api/retention", ADMIN, b'{"spans": 1' + b"0" * 400 + b"}", {}, 422),
            ("PATCH", "/v1/settings", ADMIN, b'{"hourly_rate": 1' + b"0" * 400 + b"}", {}, 422),
            ("POST", "/api/alert-rules", ADMIN, b'{"name": "\\udc00"}', {}, 422),
            ("POST", "/api/v1/capture-session", INGEST,
             b'{"session_id":"s","metadata":{"k":"\\ud800"}}', {}, 422),
            ("GET", "/api/logs/a%00b", READ, b"", {}, 422),
            ("GET", "/api/logs/a%00b/status", READ, b"", {}, 422),
            ("GET", "/api/mcp/sessions/%00", READ, b"", {}, 422),
            ("GET", "/v1/events?agent_id=%00", READ, b"", {}, 422),
            ("GET", "/api/org/context", READ, b"", {}, 401),
            ("GET", "/v1/track", INGEST, b"", {}, 405),
            ("GET", "/api/runs/a/b", READ, b"", {}, 404),
            ("GET", "/api/nothing-here", READ, b"", {}, 404),
        ]  # fmt: skip
        for method, path, key, body, headers, status in cases:
            r = c.request(method, path, content=body or None, headers={**_auth(key), **headers})
            assert r.status_code == status, (method, path, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/json"), path
            assert "error" in r.json(), path
            if status == 405:
                assert r.headers["allow"] == "POST"
        body = gzip.compress(b'{"project":"p","task":"t","output":"x"}')
        gz = {**_auth(INGEST), "Content-Encoding": "gzip"}
        r = c.post("/api/logs", content=body, headers=gz)
        assert r.status_code == 200, r.text
        projects = c.get("/api/projects", headers=_auth(READ)).json()
        project = next(p for p in projects if p["name"] == "p")
        r = c.get(f"/api/projects/{project['id']}/tasks", headers=_auth(READ))
        assert r.status_code == 200 and [t["name"] for t in r.json()] == ["t"]


def test_tracira_key_policy_route_by_route(server: Server) -> None:
    """The table in docs/logs.md: ingest sends and polls, read makes every GET, admin all."""
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        log = c.post("/api/logs", headers=_auth(INGEST), json={"project": "k", "output": "x"})
        log_id = log.json()["id"]
        rules = [
            ("POST", "/api/logs", {"project": "k", "output": "y"}, {"ingest", "admin"}),
            ("GET", "/api/logs", None, {"read", "admin"}),
            ("GET", f"/api/logs/{log_id}", None, {"read", "admin"}),
            ("GET", f"/api/logs/{log_id}/status", None, {"ingest", "read", "admin"}),
            ("GET", "/api/logs/tasks", None, {"read", "admin"}),
            ("GET", "/api/verify", None, {"ingest", "read", "admin"}),
            ("GET", "/api/rules", None, {"read", "admin"}),
            ("GET", "/api/projects", None, {"read", "admin"}),
            ("GET", "/api/settings", None, {"read", "admin"}),
            ("POST", "/api/rules/evaluate",
             {"output": "x", "rule": {"type": "keyword_required", "value": "x"}},
             {"ingest", "admin"}),
            ("PATCH", f"/api/logs/{log_id}/decision", {"decision": "approved"}, {"admin"}),
            ("POST", "/api/projects", {"name": "policy"}, {"admin"}),
        ]  # fmt: skip
        for method, path, body, allowed in rules:
            for scope in ("read", "ingest", "admin"):
                r = c.request(method, path, json=body, headers=_auth(KEYS[("acme", scope)]))
                ok = r.status_code < 400 or (r.status_code == 409 and scope == "admin")
                assert ok == (scope in allowed), (method, path, scope, r.status_code, r.text)
                if not ok:
                    assert r.status_code == 401
                    assert " a ingest" not in r.text and "an read" not in r.text
