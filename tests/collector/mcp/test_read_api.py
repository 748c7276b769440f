"""MCP capture, continued: session ordering and fields, the session list, the read routes'
checks, the analytics numbers and the `tool_calls` view, through `tests/collector/mcp/test_api.py`'s
client over a real tmp Store.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

with warnings.catch_warnings():
    # Starlette asks for the `httpx2` fork; `httpx` is what the test extras install and works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from collector.store.lake import LAKE
from collector.store.writer import Store
from tests.collector.mcp.test_api import DOC_EXAMPLE, INGEST, OTHER_READ, _event, _get, client

__all__ = ["client"]  # the fixture, shared with test_mcp


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
