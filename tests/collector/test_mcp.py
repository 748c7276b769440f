"""MCP capture: validation of capture-session/capture-event, privacy modes, ordering, the
`tool_calls` view and the analytics numbers, over a real tmp Store through Starlette's client.
"""

from __future__ import annotations

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

from collector.auth import Authenticator
from collector.mcp_api import McpApi
from collector.mcp_read_api import McpReadApi
from collector.mcp_store import McpConfig
from collector.schema import create_derived_sql
from collector.store import LAKE, Store, StoreSettings
from collector.views import create_views

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
        ({**DOC_EXAMPLE, "args": "{not json"}, "args"),
        ({**DOC_EXAMPLE, "args": {"query": "x"}}, "args"),
        ({**DOC_EXAMPLE, "result": "plain words"}, "result"),
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
    r = _event(c, {"primitive_type": "nope", "latency": 1.5, "args": "{"})
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


# -- sessions and ordering ---------------------------------------------------------------------


def _session(c: TestClient, body: dict[str, Any]) -> Any:
    return c.post("/api/v1/capture-session", json=body, headers={"X-Org-Id": INGEST})


def test_session_calls_keep_their_order_and_unknown_sessions_appear(
    client: tuple[TestClient, Store],
) -> None:
    c, _ = client
    sent: dict[str, list[str]] = {"a": [], "b": []}
    for i in range(30):
        sid = "a" if i % 3 else "b"
        r = _event(c, {**DOC_EXAMPLE, "session_id": sid, "primitive_name": f"t{i}"})
        sent[sid].append(r.json()["event_id"])
    for sid in ("a", "b"):
        r = _get(c, f"/api/mcp/sessions/{sid}")
        assert r.status_code == 200
        assert [x["event_id"] for x in r.json()["calls"]] == sent[sid]
        assert r.json()["session"]["implicit"] is True
        assert r.json()["session"]["call_count"] == len(sent[sid])


def test_capture_session_fields_and_latest_wins(client: tuple[TestClient, Store]) -> None:
    c, _ = client
    assert _event(c, {**DOC_EXAMPLE, "session_id": "s1"}).status_code == 200
    body = {
        "session_id": "s1",
        "client_name": "claude-desktop",
        "client_version": "0.9",
        "server_name": "search-mcp",
        "server_version": "1.2.0",
        "protocol_version": "2025-06-18",
        "user_id": "u1",
        "agent_id": "ag1",
        "metadata": {"region": "eu", "tier": 2},
    }
    r = _session(c, body)
    assert r.status_code == 200
    assert r.json() == {"session_id": "s1"}
    assert _session(c, {**body, "server_version": "1.3.0"}).status_code == 200
    s = _get(c, "/api/mcp/sessions/s1").json()["session"]
    assert s["implicit"] is False
    assert s["server_version"] == "1.3.0"
    assert s["metadata"] == {"region": "eu", "tier": "2"}
    assert (s["client_name"], s["user_id"], s["agent_id"]) == ("claude-desktop", "u1", "ag1")
    assert s["call_count"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "session_id"),
        ({"session_id": "s", "client_name": 5}, "client_name"),
        ({"session_id": "s", "metadata": [1]}, "metadata"),
    ],
)
def test_capture_session_validation(
    client: tuple[TestClient, Store], body: dict[str, Any], field: str
) -> None:
    c, _ = client
    r = _session(c, body)
    assert r.status_code == 422
    assert [d["field"] for d in r.json()["details"]] == [field]


def test_session_list_pages_filters_and_is_org_scoped(client: tuple[TestClient, Store]) -> None:
    c, _ = client
    for i in range(5):
        _session(c, {"session_id": f"s{i}", "server_name": "even" if i % 2 == 0 else "odd"})
    _event(c, {**DOC_EXAMPLE, "session_id": "implicit-1"})
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = _get(c, "/api/mcp/sessions", **params).json()
        assert page["total_count"] == 6
        seen += [s["session_id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["implicit-1", "s4", "s3", "s2", "s1", "s0"]  # newest first
    even = _get(c, "/api/mcp/sessions", server_name="even").json()
    assert [s["session_id"] for s in even["sessions"]] == ["s4", "s2", "s0"]
    assert _get(c, "/api/mcp/sessions", key=OTHER_READ).json()["sessions"] == []
    assert _get(c, "/api/mcp/sessions/s1", key=OTHER_READ).status_code == 404


def test_read_routes_validate_and_need_a_read_key(client: tuple[TestClient, Store]) -> None:
    c, _ = client
    assert _get(c, "/api/mcp/sessions", key=INGEST).status_code == 401
    r = _get(c, "/api/mcp/sessions", cursor="garbage", limit="0")
    assert r.status_code == 422
    assert sorted(d["field"] for d in r.json()["details"]) == ["cursor", "limit"]
    r = _get(c, "/api/mcp/tools", primitive_type="function")
    assert r.status_code == 422
    assert _get(c, "/api/mcp/sessions/nope").status_code == 404


# -- analytics and the tool_calls view --------------------------------------------------------


def test_tool_analytics_match_hand_computed_numbers(client: tuple[TestClient, Store]) -> None:
    c, _ = client
    # search: latencies 10, 20, 30, 40, 100; the 20 and 100 calls failed.
    for latency, ok in ((40, True), (10, True), (100, False), (30, True), (20, False)):
        _event(
            c,
            {
                **DOC_EXAMPLE,
                "latency": latency,
                "success": ok,
                "metadata": {} if ok else {"error": f"failed after {latency}"},
                "checkpoints": [
                    {"name": "fetch", "timestamp": latency // 2},
                    {"name": "parse", "timestamp": latency // 2 + 1},
                    {"name": "auth", "timestamp": 1},
                    {"name": "render", "timestamp": latency},
                ],
            },
        )
    _event(c, {**DOC_EXAMPLE, "primitive_name": "readme", "primitive_type": "resource"})
    body = _get(c, "/api/mcp/tools").json()
    tools = {(t["primitive_name"], t["primitive_type"]): t for t in body["tools"]}
    assert list(tools) == [("search_web", "tool"), ("readme", "resource")]  # most-called first
    t = tools[("search_web", "tool")]
    assert (t["calls"], t["errors"], t["success_rate"], t["sessions"]) == (5, 2, 0.6, 1)
    # quantile_cont over [10, 20, 30, 40, 100]: p50 = 30; p95 at 3.8 → 40 + 0.8·60 = 88;
    # p99 at 3.96 → 40 + 0.96·60 = 97.6; mean = 200 / 5 = 40.
    assert (t["p50_latency_ms"], t["p95_latency_ms"], t["p99_latency_ms"]) == (30.0, 88.0, 97.6)
    assert (t["avg_latency_ms"], t["max_latency_ms"]) == (40.0, 100)
    # Durations: auth 1; fetch latency/2 - 1; parse 1; render latency/2 - 1.
    # fetch mean = (19+4+49+14+9)/5 = 19; render the same; ties go by name.
    assert t["slowest_checkpoints"] == [
        {"name": "fetch", "avg_duration_ms": 19.0, "max_duration_ms": 49, "count": 5},
        {"name": "render", "avg_duration_ms": 19.0, "max_duration_ms": 49, "count": 5},
        {"name": "auth", "avg_duration_ms": 1.0, "max_duration_ms": 1, "count": 5},
    ]
    assert [e["error"] for e in t["error_examples"]] == ["failed after 20", "failed after 100"]
    only = _get(c, "/api/mcp/tools", primitive_type="resource").json()["tools"]
    assert [x["primitive_name"] for x in only] == ["readme"]
    assert _get(c, "/api/mcp/tools", key=OTHER_READ).json()["tools"] == []


def test_captured_calls_are_in_the_tool_calls_view(client: tuple[TestClient, Store]) -> None:
    c, store = client
    _session(c, {"session_id": "my-session-123", "server_name": "search-mcp"})
    event_id = _event(c, DOC_EXAMPLE).json()["event_id"]
    rows = store.query(
        f"SELECT origin, span_id, tool_name, service_name, success, latency_ms, tool_args, "
        f"session_id, primitive_type, run_id, end_time_unix_nano - start_time_unix_nano "
        f"FROM {LAKE}.tool_calls"
    )
    assert rows == [
        (
            "mcp",
            event_id,
            "search_web",
            "search-mcp",
            True,
            342.0,
            DOC_EXAMPLE["args"],
            "my-session-123",
            "tool",
            None,
            342_000_000,
        )
    ]
