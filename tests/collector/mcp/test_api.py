"""MCP capture: validation of capture-session/capture-event, privacy modes, ordering, the
`tool_calls` view and the analytics numbers, over a real tmp Store through Starlette's client.
"""

from __future__ import annotations

import contextlib
import json
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

with warnings.catch_warnings():
    # Starlette asks for the `httpx2` fork; `httpx` is what the test extras install and works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from collector.auth.keys import Authenticator
from collector.mcp import store as mcp_store
from collector.mcp.api import McpApi
from collector.mcp.config import McpConfig
from collector.mcp.read_api import McpReadApi
from collector.read.views import create_views
from collector.store.lake import LAKE, StoreSettings
from collector.store.schema import create_derived_sql
from collector.store.writer import Store

INGEST = "al_live_aaaa0001_" + "1" * 40
READ = "al_read_aaaa0002_" + "2" * 40
OTHER_INGEST = "al_live_bbbb0001_" + "4" * 40
OTHER_READ = "al_read_bbbb0002_" + "5" * 40

DOC_EXAMPLE: dict[str, Any] = {
    "session_id": "my-session-123",
    "primitive_name": "search_web",
    "primitive_type": "tool",
    "success": True,
    "latency": 342,
    "args": '{"query": "latest AI news"}',
    "result": '{"results": [{"title": "..."}]}',
    "checkpoints": [{"name": "cache_lookup", "timestamp": 5, "metadata": {"rows": "5"}}],
    "metadata": {"trace_id": "abc123"},
}


def _client(tmp_path: Path, config: McpConfig) -> Iterator[tuple[TestClient, Store]]:
    store = Store(StoreSettings(str(tmp_path / "c.ducklake"), str(tmp_path / "data")))
    store.open()
    try:
        for name in ("runs", "span_runs"):
            store.call(lambda cur, n=name: cur.execute(create_derived_sql(n)))
        auth = Authenticator(store)
        auth.declare("acme", "ingest", INGEST)
        auth.declare("acme", "read", READ)
        auth.declare("globex", "ingest", OTHER_INGEST)
        auth.declare("globex", "read", OTHER_READ)
        api = McpApi(store, auth, config)
        api.create_tables()
        create_views(store)
        app = Starlette(routes=[*api.routes(), *McpReadApi(store, auth).routes()])
        with TestClient(app) as client:
            yield client, store
    finally:
        store.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, Store]]:
    yield from _client(tmp_path, McpConfig(max_payload_chars=10_000))


def _event(c: TestClient, body: dict[str, Any], key: str = INGEST) -> Any:
    return c.post("/api/v1/capture-event", json=body, headers={"X-Org-Id": key})


def _get(c: TestClient, path: str, key: str = READ, **params: Any) -> Any:
    return c.get(path, params=params, headers={"Authorization": f"Bearer {key}"})


# -- the documented request --------------------------------------------------------------


def test_the_doc_example_is_stored_with_every_field(client: tuple[TestClient, Store]) -> None:
    c, store = client
    r = _event(c, DOC_EXAMPLE)
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["event_id"]
    event_id = r.json()["event_id"]
    assert uuid.UUID(event_id).version == 4
    rows = store.query(
        "SELECT org, session_id, primitive_name, primitive_type, success, latency_ms, args, "
        "result, checkpoints, metadata->>'trace_id', trace_id, "
        "epoch_ms(received_at) - epoch_ms(started_at) FROM mcp_events WHERE event_id = ?",
        [event_id],
    )
    assert rows == [
        (
            "acme",
            "my-session-123",
            "search_web",
            "tool",
            True,
            342,
            DOC_EXAMPLE["args"],
            DOC_EXAMPLE["result"],
            [
                {
                    "name": "cache_lookup",
                    "timestamp_ms": 5,
                    "duration_ms": 5,
                    "metadata": '{"rows": "5"}',
                }
            ],
            "abc123",
            "abc123",
            342,
        )
    ]


def test_bearer_authorization_works_too(client: tuple[TestClient, Store]) -> None:
    c, _ = client
    r = c.post(
        "/api/v1/capture-event", json=DOC_EXAMPLE, headers={"Authorization": f"Bearer {INGEST}"}
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Org-Id": "not-a-key"},
        {"X-Org-Id": READ},  # a read key cannot ingest
        {"X-Org-Id": "al_live_aaaa0001_" + "9" * 40},  # right id, wrong secret
        {"Authorization": "Basic abc"},
    ],
)
def test_unauthenticated_is_401_in_the_error_shape(
    client: tuple[TestClient, Store], headers: dict[str, str]
) -> None:
    c, store = client
    r = c.post("/api/v1/capture-event", json=DOC_EXAMPLE, headers=headers)
    assert r.status_code == 401
    assert set(r.json()) >= {"error", "code"}
    assert store.query("SELECT count(*) FROM mcp_events") == [(0,)]


# -- validation -----------------------------------------------------------------------------


def _without(name: str) -> dict[str, Any]:
    return {k: v for k, v in DOC_EXAMPLE.items() if k != name}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_without("session_id"), "session_id"),
        (_without("primitive_name"), "primitive_name"),
        (_without("primitive_type"), "primitive_type"),
        (_without("success"), "success"),
        (_without("latency"), "latency"),
        ({**DOC_EXAMPLE, "session_id": ""}, "session_id"),
        ({**DOC_EXAMPLE, "session_id": 12}, "session_id"),
        ({**DOC_EXAMPLE, "primitive_name": "x" * 257}, "primitive_name"),
        ({**DOC_EXAMPLE, "primitive_type": "function"}, "primitive_type"),
        ({**DOC_EXAMPLE, "primitive_type": "Tool"}, "primitive_type"),
        ({**DOC_EXAMPLE, "success": "true"}, "success"),
        ({**DOC_EXAMPLE, "success": 1}, "success"),
        ({**DOC_EXAMPLE, "latency": 342.5}, "latency"),
        ({**DOC_EXAMPLE, "latency": "342"}, "latency"),
        ({**DOC_EXAMPLE, "latency": True}, "latency"),
        ({**DOC_EXAMPLE, "latency": -1}, "latency"),
        ({**DOC_EXAMPLE, "latency": 2**40}, "latency"),
        ({**DOC_EXAMPLE, "args": {"query": "x"}}, "args"),  # an object, not its JSON text
        ({**DOC_EXAMPLE, "result": 42}, "result"),
        ({**DOC_EXAMPLE, "checkpoints": {"name": "a"}}, "checkpoints"),
        ({**DOC_EXAMPLE, "checkpoints": ["a"]}, "checkpoints[0]"),
        ({**DOC_EXAMPLE, "checkpoints": [{"timestamp": 1}]}, "checkpoints[0].name"),
        (
            {**DOC_EXAMPLE, "checkpoints": [{"name": "a", "timestamp": 1.5}]},
            "checkpoints[0].timestamp",
        ),
        ({**DOC_EXAMPLE, "checkpoints": [{"name": "a"}]}, "checkpoints[0].timestamp"),
        (
            {**DOC_EXAMPLE, "checkpoints": [{"name": "a", "timestamp": 1, "metadata": []}]},
            "checkpoints[0].metadata",
        ),
        ({**DOC_EXAMPLE, "checkpoints": [{"name": "a", "timestamp": 1}] * 101}, "checkpoints"),
        ({**DOC_EXAMPLE, "metadata": "trace=abc"}, "metadata"),
        ({**DOC_EXAMPLE, "metadata": {str(i): "v" for i in range(101)}}, "metadata"),
    ],
)
def test_each_invalid_field_is_a_422_naming_it(
    client: tuple[TestClient, Store], body: dict[str, Any], field: str
) -> None:
    c, store = client
    r = _event(c, body)
    assert r.status_code == 422, r.text
    payload = r.json()
    assert payload["code"] == "validation_error"
    assert field in [d["field"] for d in payload["details"]]
    assert store.query("SELECT count(*) FROM mcp_events") == [(0,)]


def test_every_problem_is_listed_at_once(client: tuple[TestClient, Store]) -> None:
    c, _ = client
    r = _event(c, {"primitive_type": "nope", "latency": 1.5, "args": ["x"]})
    fields = sorted(d["field"] for d in r.json()["details"])
    assert fields == [
        "args",
        "latency",
        "primitive_name",
        "primitive_type",
        "session_id",
        "success",
    ]


@pytest.mark.parametrize(
    ("args", "result"),
    [
        ("{not json", '{"ok": true}'),
        ('{"q": 1}', "Traceback (most recent call last): ..."),
        ("plain words", "{'python': 'repr'}"),
        ("", "NaN"),
    ],
)
def test_text_that_is_not_json_is_kept_as_sent_and_flagged(
    client: tuple[TestClient, Store], args: str, result: str
) -> None:
    """The doc says "JSON-encoded", but an SDK that sends other text loses no call: the text is
    stored as given, flagged, and the read route shows the flag."""
    c, store = client
    body = {**DOC_EXAMPLE, "args": args, "result": result, "success": False}
    r = _event(c, body)
    assert r.status_code == 200, r.text
    rows = store.query("SELECT args, args_not_json, result, result_not_json, error FROM mcp_events")
    args_bad, result_bad = _not_json(args), _not_json(result)
    assert rows == [(args, args_bad, result, result_bad, result)]
    [call] = _get(c, f"/api/mcp/sessions/{DOC_EXAMPLE['session_id']}").json()["calls"]
    assert (call["args"], call["args_not_json"]) == (args, args_bad)
    assert (call["result"], call["result_not_json"]) == (result, result_bad)


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def test_json_payloads_are_not_flagged(client: tuple[TestClient, Store]) -> None:
    c, _ = client
    assert _event(c, DOC_EXAMPLE).status_code == 200
    [call] = _get(c, f"/api/mcp/sessions/{DOC_EXAMPLE['session_id']}").json()["calls"]
    assert (call["args_not_json"], call["result_not_json"]) == (False, False)


def test_a_store_from_before_the_flags_gains_them_on_start(tmp_path: Path) -> None:
    """`mcp_events` as an older version created it (no flag columns), with a call in it: on
    start the columns are added, the old call reads as not flagged, new calls are flagged."""
    store = Store(StoreSettings(str(tmp_path / "c.ducklake"), str(tmp_path / "data")))
    store.open()
    old = [c for c in mcp_store.EVENT_COLUMNS if not c.name.endswith("_not_json")]
    assert len(old) == len(mcp_store.EVENT_COLUMNS) - 2
    body = ", ".join(f"{c.name} {c.sql}" for c in old)
    store.call(lambda cur: cur.execute(f"CREATE TABLE {LAKE}.mcp_events ({body})"))
    store.call(
        lambda cur: cur.execute(
            f"INSERT INTO {LAKE}.mcp_events (org, event_id, session_id, seq, received_at, "
            "started_at, primitive_name, primitive_type, success, latency_ms, args, "
            "args_truncated, result_truncated, checkpoints, metadata) VALUES ('acme', 'old-1', "
            "'s-old', 1, now(), now(), 'search', 'tool', true, 5, '{}', false, false, [], '{}')"
        )
    )
    store.close()
    with contextlib.contextmanager(_client)(tmp_path, McpConfig()) as (c, store):
        columns = [r[0] for r in store.query("DESCRIBE mcp_events")]
        assert columns[-2:] == ["args_not_json", "result_not_json"]
        [call] = _get(c, "/api/mcp/sessions/s-old").json()["calls"]
        assert (call["event_id"], call["args_not_json"], call["result_not_json"]) == (
            "old-1",
            False,
            False,
        )
        new = {**DOC_EXAMPLE, "session_id": "s-new", "args": "not json"}
        assert _event(c, new).status_code == 200
        [call] = _get(c, "/api/mcp/sessions/s-new").json()["calls"]
        assert (call["args"], call["args_not_json"]) == ("not json", True)


@pytest.mark.parametrize(
    ("content", "status"),
    [(b"{not json", 422), (b"[1, 2]", 422), (b"null", 422), (b'"text"', 422)],
)
def test_a_body_that_is_not_a_json_object_is_422(
    client: tuple[TestClient, Store], content: bytes, status: int
) -> None:
    c, _ = client
    r = c.post(
        "/api/v1/capture-event",
        content=content,
        headers={"X-Org-Id": INGEST, "Content-Type": "application/json"},
    )
    assert r.status_code == status
    assert r.json()["code"] == "validation_error"


def test_an_oversize_body_is_413_and_not_stored(tmp_path: Path) -> None:
    for c, store in _client(tmp_path, McpConfig(max_body_bytes=4096)):
        r = _event(c, {**DOC_EXAMPLE, "args": json.dumps({"q": "x" * 5000})})
        assert r.status_code == 413
        assert r.json()["code"] == "payload_too_large"
        assert store.query("SELECT count(*) FROM mcp_events") == [(0,)]


def test_integral_float_latency_and_json_null_optionals_are_accepted(
    client: tuple[TestClient, Store],
) -> None:
    c, store = client
    body = {**DOC_EXAMPLE, "latency": 342.0, "args": None, "checkpoints": None, "metadata": None}
    assert _event(c, body).status_code == 200
    assert store.query("SELECT latency_ms, args, checkpoints FROM mcp_events") == [(342, None, [])]


def test_metadata_values_are_stored_as_strings(client: tuple[TestClient, Store]) -> None:
    c, store = client
    meta = {"s": "x", "n": 5, "b": True, "z": None, "o": {"a": 1}}
    assert _event(c, {**DOC_EXAMPLE, "metadata": meta}).status_code == 200
    (stored,) = store.query("SELECT metadata FROM mcp_events")[0]
    assert json.loads(stored) == {"s": "x", "n": "5", "b": "true", "z": "null", "o": '{"a":1}'}


def test_other_methods_are_a_json_405(client: tuple[TestClient, Store]) -> None:
    c, _ = client
    r = c.get("/api/v1/capture-event", headers={"X-Org-Id": INGEST})
    assert r.status_code == 405
    assert r.json()["code"] == "method_not_allowed"


# -- privacy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "args_len", "cut"),
    [("full", 5009, False), ("truncate", 100, True), ("none", None, False)],
)
def test_privacy_modes(tmp_path: Path, mode: Any, args_len: int | None, cut: bool) -> None:
    args = json.dumps({"q": "x" * 5000})
    assert len(args) == 5009
    for c, store in _client(tmp_path, McpConfig(payloads=mode, max_payload_chars=100)):
        assert _event(c, {**DOC_EXAMPLE, "args": args}).status_code == 200
        row = store.query("SELECT length(args), args_truncated, result IS NULL FROM mcp_events")
        assert row == [(args_len, cut, mode == "none")]


def test_a_failed_calls_error_comes_from_metadata_else_its_result(
    client: tuple[TestClient, Store],
) -> None:
    c, store = client
    _event(c, {**DOC_EXAMPLE, "success": False, "metadata": {"error": "timeout"}})
    _event(c, {**DOC_EXAMPLE, "success": False, "result": '{"e": "boom"}', "metadata": {}})
    _event(c, {**DOC_EXAMPLE, "success": True})
    rows = store.query("SELECT error FROM mcp_events ORDER BY seq")
    assert rows == [("timeout",), ('{"e": "boom"}',), (None,)]
