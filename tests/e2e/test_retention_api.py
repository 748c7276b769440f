"""`/api/retention` end to end: an org's TTLs read and set with its admin key on a real server,
config values as defaults, bad input as 422 details, other scopes refused, orgs kept apart.
"""

from __future__ import annotations

import httpx

from tests.e2e.server import KEYS, Server


def call(
    server: Server, method: str, org: str, scope: str = "admin", **kw: object
) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEYS[(org, scope)]}"}
    return httpx.request(method, f"{server.base_url}/api/retention", headers=headers, **kw)  # type: ignore[arg-type]


def test_read_set_and_reset_an_orgs_ttls(server: Server) -> None:
    body = call(server, "GET", "acme").json()
    assert body["org"] == "acme" and body["interval_s"] == 3600
    assert body["kinds"]["spans"] == {"ttl_days": 0.0, "source": "default"}
    r = call(server, "PUT", "acme", json={"llm_calls": 7, "metrics": 0.5})
    assert r.status_code == 200
    assert r.json()["kinds"]["llm_calls"] == {"ttl_days": 7.0, "source": "org"}
    assert call(server, "GET", "globex").json()["kinds"]["llm_calls"]["source"] == "default"
    r = call(server, "PATCH", "acme", json={"llm_calls": None})
    assert r.json()["kinds"]["llm_calls"]["source"] == "default"
    assert r.json()["kinds"]["metrics"]["ttl_days"] == 0.5


def test_bad_input_and_wrong_keys(server: Server) -> None:
    r = call(server, "PUT", "acme", json={"spanz": 3, "runs": -1, "metrics": "7", "logs": True})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert [d["field"] for d in r.json()["details"]] == ["spanz", "runs", "metrics", "logs"]
    assert call(server, "PUT", "acme", content=b"[1]").status_code == 422
    assert call(server, "PUT", "acme", content=b"{nope").status_code == 422
    assert call(server, "GET", "acme", scope="read").status_code == 401
    assert call(server, "PUT", "acme", scope="ingest", json={"spans": 1}).status_code == 401
