"""The one endpoint wrapper, in process: auth, limits, parameters, bodies, the error shapes of
each API, 404/405 in JSON, and a handler's crash answered as a 500 on a kept connection.
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette asks for the `httpx2` fork; httpx works
    from starlette.testclient import TestClient

from collector.api import schema as sc
from collector.api.apis import ALL, EVALS, READ
from collector.api.params import Param
from collector.api.ratelimit import SlidingWindowLimiter
from collector.api.routes import Call, Keys, NotFound, Operation, PerKey, SessionOnly, routes
from collector.auth.keys import Authenticator, ensure_org
from collector.errors import ApiError
from collector.store.lake import StoreSettings
from collector.store.writer import Store
from tests.e2e.server import KEYS

READ_KEY, INGEST = KEYS[("acme", "read")], KEYS[("acme", "ingest")]
BODY = sc.obj({"name": sc.string(10), "n": sc.integer(0, 5)}, ["name"])


def echo(call: Call) -> dict[str, Any]:
    return {"org": call.org, "body": call.body, "n": call.query.query.get("n")}


def boom(call: Call) -> None:
    raise RuntimeError("a bug")


def teapot(call: Call) -> None:
    raise ApiError(429, "rate_limited", "slow down", headers={"Retry-After": "7"})


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = Store(StoreSettings(catalog=str(tmp_path / "c.ducklake"), data_path=str(tmp_path)))
    store.open()
    auth = Authenticator(store)
    ensure_org(store, "acme")
    for (org, scope), key in KEYS.items():
        auth.declare(org, scope, key)  # type: ignore[arg-type]
    read = Keys(auth, ("read",))
    ops = [
        Operation(READ, "GET", "/api/x", echo, "echo", read,
                  params=(Param("n", sc.integer(1, 3)),)),
        Operation(READ, "POST", "/api/x", echo, "echo", read, body=BODY, body_limit=250_000),
        Operation(READ, "GET", "/api/x/{id}", echo, "one", read, blocking=True),
        Operation(READ, "GET", "/api/boom", boom, "crash", None),
        Operation(EVALS, "GET", "/api/logs/teapot", teapot, "a 429", None),
        Operation(READ, "GET", "/api/limited", echo, "limited", read,
                  limit=PerKey(SlidingWindowLimiter(1, 60.0))),
        Operation(READ, "GET", "/api/org/context", echo, "session", SessionOnly()),
    ]  # fmt: skip
    app = Starlette(routes=routes(ops))
    app.router.default = NotFound(ALL)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {READ_KEY}"
        yield c
    store.close()


def test_a_good_request_reaches_the_handler(client: TestClient) -> None:
    assert client.get("/api/x", params={"n": "2"}).json() == {"org": "acme", "body": None, "n": "2"}
    r = client.post("/api/x", json={"name": "a", "n": 1})
    assert r.status_code == 200 and r.json()["body"] == {"name": "a", "n": 1}


def test_auth_comes_first_and_a_wrong_scope_is_401(client: TestClient) -> None:
    r = client.post("/api/x", content=b"{", headers={"Authorization": f"Bearer {INGEST}"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    assert "an ingest key cannot be used here" in r.json()["error"]
    assert client.get("/api/x", headers={"Authorization": ""}).status_code == 401


def test_session_only_route_refuses_every_bearer_token(client: TestClient) -> None:
    r = client.get("/api/org/context")
    assert r.status_code == 401 and set(r.json()) == {"error", "code"}


@pytest.mark.parametrize(
    ("content", "headers", "status", "field"),
    [
        (b'{"name": "a\\u0000b"}', {}, 422, "name"),
        (b'{"name": "\\ud800"}', {}, 422, "name"),
        (b'{"name": "a", "extra": {"k\\u0000": 1}}', {}, 422, "extra"),
        (b'{"name": "a", "n": 1' + b"0" * 400 + b"}", {}, 422, "n"),
        (b'{"name": "a", "n": 1e400}', {}, 422, "n"),
        (b'{"name": "a", "n": NaN}', {}, 422, "n"),
        (b'{"name": "\xff"}', {}, 422, "body"),
        (b"[" * 100_000 + b"]" * 100_000, {}, 422, "body"),
        (b'{"name": 5}', {}, 422, "name"),
        (b'{"n": 9}', {}, 422, "name"),
        (b"null", {}, 422, "body"),
        (b"not gzip", {"Content-Encoding": "gzip"}, 400, None),
        (b"not deflate", {"Content-Encoding": "deflate"}, 400, None),
        (b'{"name": "a"}', {"Content-Encoding": "br"}, 415, None),
        (b'{"name": "a"}', {"Content-Type": "text/plain"}, 415, None),
        (
            gzip.compress(b'{"name": "' + b"a" * 300_000 + b'"}'),
            {"Content-Encoding": "gzip"},
            413,
            None,
        ),
    ],
)
def test_bad_bodies_are_4xx_in_the_api_shape(
    client: TestClient, content: bytes, headers: dict[str, str], status: int, field: str | None
) -> None:
    r = client.post(
        "/api/x", content=content, headers={"Content-Type": "application/json", **headers}
    )
    assert r.status_code == status, r.text
    assert "error" in r.json() and "code" in r.json()
    if field is not None:
        assert field in [d["field"] for d in r.json()["details"]]


def test_a_gzip_body_within_the_limit_is_read(client: TestClient) -> None:
    r = client.post(
        "/api/x",
        content=gzip.compress(b'{"name": "z"}'),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert r.status_code == 200 and r.json()["body"] == {"name": "z"}


def test_query_and_path_text_is_checked(client: TestClient) -> None:
    r = client.get("/api/x", params={"n": "9"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "n"
    r = client.get("/api/x", params={"q": "a\x00b"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "q"
    r = client.get("/api/x/a%00b")
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "id"


def test_unknown_paths_and_methods_answer_json(client: TestClient) -> None:
    r = client.get("/api/x/a/b")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.delete("/api/x")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert r.json()["code"] == "method_not_allowed"


def test_a_crash_is_a_500_in_the_shape_and_the_connection_stays_usable(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    r = client.get("/api/boom")
    assert r.status_code == 500 and r.json() == {
        "error": "Internal error",
        "code": "internal_error",
    }
    assert "a bug" in caplog.text
    assert r.headers.get("connection") != "close"
    assert client.get("/api/x").status_code == 200


def test_each_api_keeps_its_error_shape(client: TestClient) -> None:
    r = client.get("/api/logs/teapot")  # logs-rules-api.txt: the 429 is {"error"} alone
    assert r.status_code == 429 and r.json() == {"error": "slow down"}
    assert r.headers["retry-after"] == "7"


def test_the_rate_limit_answers_429_with_retry_after(client: TestClient) -> None:
    assert client.get("/api/limited").status_code == 200
    r = client.get("/api/limited")
    assert r.status_code == 429 and r.json()["code"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1


def test_routes_refuse_a_duplicate_and_an_unchecked_schema_keyword() -> None:
    op = Operation(READ, "GET", "/a", echo, "a", None)
    with pytest.raises(ValueError, match="twice"):
        routes([op, op])
    odd = Operation(READ, "POST", "/a", echo, "a", None, body={"type": "object", "if": {}})
    with pytest.raises(ValueError, match="unsupported"):
        routes([odd])
