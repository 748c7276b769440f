"""The admin key API end to end (`POST/GET/DELETE /api/keys`) and the auth matrix across orgs.

One server with two declared orgs, acme and globex; keys minted here are used at once on the
OTLP and admin routes, so every check is on real authentication, not on the listing alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.otlp import PROTOBUF, spans_request
from tests.e2e.server import KEYS, Server, make_server

SHAPE = {
    "ingest": re.compile(r"al_live_([0-9a-f]{8})_[0-9a-f]{40}"),
    "read": re.compile(r"al_read_([0-9a-f]{8})_[0-9a-f]{40}"),
    "admin": re.compile(r"al_admin_([0-9a-f]{8})_[0-9a-f]{40}"),
}
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = make_server(tmp_path_factory.mktemp("admin")).start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            assert s.stop() == 0


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.api_url, timeout=30) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


ACME_ADMIN = bearer(KEYS[("acme", "admin")])
GLOBEX_ADMIN = bearer(KEYS[("globex", "admin")])


def create(client: httpx.Client, scope: str, name: str, admin: dict[str, str] = ACME_ADMIN) -> Any:
    r = client.post("/api/keys", json={"scope": scope, "name": name}, headers=admin)
    assert r.status_code == 201, r.text
    return r.json()


def ingest_status(client: httpx.Client, key: str) -> int:
    body = spans_request("admin-e2e", 1, seed=99).SerializeToString()
    r = client.post("/v1/traces", content=body, headers={**bearer(key), "content-type": PROTOBUF})
    return r.status_code


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert body["code"] == code
    assert isinstance(body["error"], str) and body["error"]
    assert set(body) <= {"error", "code", "details"}
    return body


def test_create_returns_the_secret_once_and_listing_never_does(client: httpx.Client) -> None:
    made = {scope: create(client, scope, f"ci {scope}") for scope in ("ingest", "read", "admin")}
    for scope, body in made.items():
        m = SHAPE[scope].fullmatch(body["key"])
        assert m, body
        assert body["id"] == m[1]
        assert body["scope"] == scope and body["name"] == f"ci {scope}"
        assert body["prefix"] == body["key"].rsplit("_", 1)[0]
        assert ISO.fullmatch(body["created_at"])
        assert body["last_used_at"] is None and body["revoked_at"] is None
        assert "secret_hash" not in body

    r = client.get("/api/keys", headers=ACME_ADMIN)
    assert r.status_code == 200
    listed = {k["id"]: k for k in r.json()["keys"]}
    for body in made.values():
        assert listed[body["id"]]["prefix"] == body["prefix"]
        assert listed[body["id"]]["scope"] == body["scope"]
        assert "key" not in listed[body["id"]]
        assert body["key"].rsplit("_", 1)[1] not in r.text  # never the secret
    # The declared keys are listed as such, also without their secrets.
    declared = {k["id"]: k for k in listed.values() if k["source"] == "config"}
    assert set(declared) == {"aaaa0001", "aaaa0002", "aaaa0003"}
    assert KEYS[("acme", "ingest")].rsplit("_", 1)[1] not in r.text
    for k in listed.values():
        assert set(k) >= {
            "id",
            "prefix",
            "scope",
            "name",
            "created_at",
            "last_used_at",
            "revoked_at",
        }


def test_minted_keys_authenticate_for_their_scope_only(client: httpx.Client) -> None:
    ingest = create(client, "ingest", "pipeline")["key"]
    read = create(client, "read", "grafana")["key"]
    admin = create(client, "admin", "ops")["key"]
    assert ingest_status(client, ingest) == 200
    assert ingest_status(client, read) == 401
    assert ingest_status(client, admin) == 401
    # The new admin key administers the same org.
    r = client.get("/api/keys", headers=bearer(admin))
    assert r.status_code == 200
    assert {k["prefix"] for k in r.json()["keys"]} >= {ingest.rsplit("_", 1)[0]}
    for key in (ingest, read):
        assert_error(client.get("/api/keys", headers=bearer(key)), 401, "invalid_api_key")
    # The use shows in the listing.
    listed = {k["id"]: k for k in r.json()["keys"]}
    assert ISO.fullmatch(listed[ingest.split("_")[2]]["last_used_at"] or "")


def test_revocation(client: httpx.Client) -> None:
    made = create(client, "ingest", "short-lived")
    assert ingest_status(client, made["key"]) == 200
    r = client.delete(f"/api/keys/{made['id']}", headers=ACME_ADMIN)
    assert r.status_code == 200
    revoked_at = r.json()["revoked_at"]
    assert ISO.fullmatch(revoked_at) and r.json()["id"] == made["id"]
    assert "key" not in r.json()
    # From then on the key gets 401 key_revoked, on OTLP and everywhere else.
    body = spans_request("admin-e2e", 1, seed=98).SerializeToString()
    r = client.post(
        "/v1/traces",
        content=body,
        headers={**bearer(made["key"]), "content-type": "application/json"},
    )
    assert r.status_code == 401 and "key_revoked" in r.text
    listed = {k["id"]: k for k in client.get("/api/keys", headers=ACME_ADMIN).json()["keys"]}
    assert listed[made["id"]]["revoked_at"] == revoked_at
    # Revoking again changes nothing.
    again = client.delete(f"/api/keys/{made['id']}", headers=ACME_ADMIN)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked_at


def test_a_revoked_admin_key_is_refused_with_key_revoked(client: httpx.Client) -> None:
    admin = create(client, "admin", "temp admin")
    assert (
        client.delete(f"/api/keys/{admin['id']}", headers=bearer(admin["key"])).status_code == 200
    )
    assert_error(client.get("/api/keys", headers=bearer(admin["key"])), 401, "key_revoked")


def test_other_orgs_keys_are_invisible(client: httpx.Client) -> None:
    acme = create(client, "ingest", "acme only")
    globex = create(client, "read", "globex only", admin=GLOBEX_ADMIN)
    globex_list = client.get("/api/keys", headers=GLOBEX_ADMIN).json()["keys"]
    ids = {k["id"] for k in globex_list}
    assert acme["id"] not in ids and globex["id"] in ids
    assert not any(k["id"].startswith("aaaa") for k in globex_list)
    acme_ids = {k["id"] for k in client.get("/api/keys", headers=ACME_ADMIN).json()["keys"]}
    assert globex["id"] not in acme_ids
    # globex cannot revoke an acme key (404, as if it did not exist), and it stays valid.
    assert_error(client.delete(f"/api/keys/{acme['id']}", headers=GLOBEX_ADMIN), 404, "not_found")
    assert ingest_status(client, acme["key"]) == 200
    assert_error(client.delete(f"/api/keys/{globex['id']}", headers=ACME_ADMIN), 404, "not_found")
    assert_error(client.delete("/api/keys/ffffffff", headers=ACME_ADMIN), 404, "not_found")
    assert_error(client.delete("/api/keys/aaaa0001", headers=GLOBEX_ADMIN), 404, "not_found")


def test_declared_keys_cannot_be_revoked_through_the_api(client: httpx.Client) -> None:
    assert_error(client.delete("/api/keys/aaaa0001", headers=ACME_ADMIN), 409, "key_declared")
    assert ingest_status(client, KEYS[("acme", "ingest")]) == 200


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_authorization"),
        ({"authorization": "Bearer nope"}, "invalid_api_key"),
        ({"authorization": f"Token {KEYS[('acme', 'admin')]}"}, "invalid_api_key"),
        (bearer("al_admin_cccc0003_" + "3" * 40), "invalid_api_key"),
        (bearer("al_admin_aaaa0003_" + "0" * 40), "invalid_api_key"),
        (bearer(KEYS[("acme", "ingest")]), "invalid_api_key"),
        (bearer(KEYS[("acme", "read")]), "invalid_api_key"),
        (bearer(KEYS[("globex", "read")]), "invalid_api_key"),
    ],
)
def test_admin_routes_need_an_admin_key(
    client: httpx.Client, headers: dict[str, str], code: str
) -> None:
    assert_error(client.get("/api/keys", headers=headers), 401, code)
    assert_error(
        client.post("/api/keys", json={"scope": "ingest", "name": "x"}, headers=headers), 401, code
    )
    assert_error(client.delete("/api/keys/aaaa0001", headers=headers), 401, code)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "root", "name": "x"}, "scope"),
        ({"name": "no scope"}, "scope"),
        ({"scope": "ingest", "name": 5}, "name"),
        ({"scope": "ingest", "name": "n" * 201}, "name"),
    ],
)
def test_create_validates_its_body(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    before = len(client.get("/api/keys", headers=ACME_ADMIN).json()["keys"])
    err = assert_error(
        client.post("/api/keys", json=body, headers=ACME_ADMIN), 422, "validation_error"
    )
    assert [d["field"] for d in err["details"]] == [field]
    assert len(client.get("/api/keys", headers=ACME_ADMIN).json()["keys"]) == before


def test_create_refuses_a_body_that_is_not_a_json_object(client: httpx.Client) -> None:
    for raw in (b"{not json", b"[1]", b'"ingest"'):
        r = client.post(
            "/api/keys",
            content=raw,
            headers={**ACME_ADMIN, "content-type": "application/json"},
        )
        assert_error(r, 422, "validation_error")
