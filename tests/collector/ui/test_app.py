"""Tests for `collector/ui/app.py` and `access.py` through Starlette's TestClient on a real store:
sign-in and its cookie, scope and org checks as the APIs make them, CSRF and origin checks,
sign-out, and revocation ending a session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.collector.ui.uihelp import ADMIN, KEYS, READ, Ui, csrf_of, ui_app


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[Ui]:
    with ui_app(tmp_path) as u:
        yield u


def test_pages_need_a_sign_in_and_the_root_leads_there(ui: Ui) -> None:
    r = ui.client.get("/", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/ui/"
    r = ui.client.get("/ui/runs?status=error", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/sign-in?next=/ui/runs%3Fstatus%3Derror"
    page = ui.client.get("/ui/sign-in")
    assert 'for="key">API key</label>' in page.text and ">Sign in</button>" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_sign_in_sets_a_strict_httponly_cookie_without_the_key(ui: Ui) -> None:
    token = csrf_of(ui.client.get("/ui/sign-in").text)
    r = ui.client.post(
        "/ui/sign-in", data={"key": READ, "csrf": token, "next": "/ui/runs"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/runs"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("al_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie and "Path=/ui" in cookie
    assert READ not in cookie and READ[-40:] not in cookie
    assert ui.client.get("/ui/runs").status_code == 200


def test_behind_tls_the_cookie_is_secure(ui: Ui) -> None:
    token = csrf_of(ui.client.get("/ui/sign-in").text)
    r = ui.client.post(
        "/ui/sign-in",
        data={"key": READ, "csrf": token},
        headers={"X-Forwarded-Proto": "https"},
        follow_redirects=False,
    )
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("al_session="))
    assert "Secure" in cookie


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("nonsense", "Not an API key"),
        (KEYS[("acme", "ingest")], "ingest key only sends data"),
        ("al_read_aaaa0002_" + "9" * 40, "not recognised"),
        ("wh-00000000_" + "0" * 40, "not recognised"),
    ],
)
def test_keys_that_cannot_sign_in_are_refused_with_a_reason(ui: Ui, key: str, reason: str) -> None:
    token = csrf_of(ui.client.get("/ui/sign-in").text)
    r = ui.client.post("/ui/sign-in", data={"key": key, "csrf": token})
    assert r.status_code == 401 and reason in r.text
    assert key not in r.text or key == "nonsense"


def test_sign_in_needs_the_forms_token_and_this_origin(ui: Ui) -> None:
    ui.client.get("/ui/sign-in")
    assert ui.client.post("/ui/sign-in", data={"key": READ}).status_code == 403
    token = csrf_of(ui.client.get("/ui/sign-in").text)
    r = ui.client.post(
        "/ui/sign-in", data={"key": READ, "csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert r.status_code == 403


def test_scope_follows_the_apis(ui: Ui) -> None:
    ui.sign_in(READ)
    assert ui.client.get("/ui/runs").status_code == 200
    assert ui.client.get("/ui/review").status_code == 200  # the logs API reads with a read key
    refused = ui.client.get("/ui/keys")
    assert refused.status_code == 403 and "needs an admin key" in refused.text
    assert "Keys</a>" not in ui.client.get("/ui/runs").text

    admin = TestClient(ui.client.app)
    ui.sign_in(ADMIN, admin)
    assert admin.get("/ui/keys").status_code == 200
    assert admin.get("/ui/runs").status_code == 403  # the read API takes read keys only
    ui.sign_in(READ, admin)  # one session may hold a key of each kind
    assert admin.get("/ui/runs").status_code == 200 and admin.get("/ui/keys").status_code == 200


def test_a_key_of_another_org_cannot_join_a_session(ui: Ui) -> None:
    ui.sign_in(READ)
    token = csrf_of(ui.client.get("/ui/sign-in").text, "/ui/sign-in")
    r = ui.client.post("/ui/sign-in", data={"key": KEYS[("globex", "admin")], "csrf": token})
    assert r.status_code == 401 and "another org" in r.text


def test_writes_need_the_sessions_csrf_token_and_this_origin(ui: Ui) -> None:
    ui.sign_in(ADMIN)
    csrf = ui.csrf("/ui/keys")
    missing = ui.client.post("/ui/keys", data={"scope": "read", "name": "x"})
    assert missing.status_code == 403 and "CSRF" in missing.text
    wrong = ui.client.post("/ui/keys", data={"scope": "read", "name": "x", "csrf": csrf + "x"})
    assert wrong.status_code == 403
    other_site = ui.client.post(
        "/ui/keys",
        data={"scope": "read", "name": "x", "csrf": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert other_site.status_code == 403
    assert [k for k in ui.app.auth.list_keys("acme") if k.name == "x"] == []
    ok = ui.client.post("/ui/keys", data={"scope": "read", "name": "x", "csrf": csrf})
    assert ok.status_code == 201
    assert [k.scope for k in ui.app.auth.list_keys("acme") if k.name == "x"] == ["read"]


def test_a_post_without_a_session_is_refused(ui: Ui) -> None:
    r = ui.client.post("/ui/review", data={"one": "approve:x"})
    assert r.status_code == 403


def test_sign_out_ends_the_session_and_revoking_a_key_ends_its_sessions(ui: Ui) -> None:
    ui.sign_in(ADMIN)
    csrf = ui.csrf("/ui/keys")
    created = ui.client.post("/ui/keys", data={"scope": "admin", "name": "temp", "csrf": csrf})
    key = created.text.split('<code class="key">')[1].split("<")[0]
    other = TestClient(ui.client.app)
    ui.sign_in(key, other)
    assert other.get("/ui/keys").status_code == 200
    record = next(k for k in ui.app.auth.list_keys("acme") if k.name == "temp")
    r = ui.client.post(
        f"/ui/keys/{record.key_id}/revoke", data={"csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 303
    assert other.get("/ui/keys", follow_redirects=False).status_code == 303  # to sign-in

    stolen = ui.client.cookies.get("al_session")
    r = ui.client.post("/ui/sign-out", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    replay = TestClient(ui.client.app, cookies={"al_session": stolen or ""})
    assert replay.get("/ui/keys", follow_redirects=False).status_code == 303
