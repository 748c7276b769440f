"""MCP capture against a real `agentledger serve`: the doc's curl example as written, then
a session's calls read back in order, in the tool analytics and durable in the store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import httpx
import pytest

from tests.e2e.server import KEYS, Server

INGEST, READ = KEYS[("acme", "ingest")], KEYS[("acme", "read")]

# The example of the Agnost capture-event API doc, character for character but for the URL and
# the key.
DOC_CURL = """curl --request POST \\
  --url {base}/api/v1/capture-event \\
  --header 'Content-Type: application/json' \\
  --header 'X-Org-Id: {key}' \\
  --data '
{{
  "session_id": "my-session-123",
  "primitive_name": "search_web",
  "primitive_type": "tool",
  "success": true,
  "latency": 342,
  "args": "{{\\"query\\": \\"latest AI news\\"}}",
  "result": "{{\\"results\\": [{{\\"title\\": \\"...\\"}}]}}",
  "checkpoints": [
    {{
      "name": "cache_lookup",
      "timestamp": 5,
      "metadata": {{
        "rows": "5"
      }}
    }}
  ],
  "metadata": {{
    "trace_id": "abc123"
  }}
}}
'
"""


def _require_mounted(server: Server) -> None:
    r = httpx.post(f"{server.api_url}/api/v1/capture-event", json={})
    if r.status_code == 404:
        pytest.fail(
            "POST /api/v1/capture-event is 404: McpApi/McpReadApi routes are not mounted in "
            "collector/service.py `_api_routes()` yet"
        )


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_docs_curl_example_runs_as_written(server: Server) -> None:
    _require_mounted(server)
    out = subprocess.run(
        ["bash", "-c", DOC_CURL.format(base=server.api_url, key=INGEST)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    event_id = json.loads(out)["event_id"]
    assert uuid.UUID(event_id)
    r = httpx.get(
        f"{server.api_url}/api/mcp/sessions/my-session-123",
        headers={"Authorization": f"Bearer {READ}"},
    )
    assert r.status_code == 200, r.text
    (call,) = r.json()["calls"]
    assert call["event_id"] == event_id
    assert call["args"] == '{"query": "latest AI news"}'
    assert call["checkpoints"][0] == {
        "name": "cache_lookup",
        "timestamp": 5,
        "duration_ms": 5,
        "metadata": {"rows": "5"},
    }
    assert call["metadata"] == {"trace_id": "abc123"}


def test_a_session_read_back_in_order_and_durable(server: Server) -> None:
    _require_mounted(server)
    ingest = {"X-Org-Id": INGEST}
    read = {"Authorization": f"Bearer {READ}"}
    with httpx.Client(base_url=server.api_url, timeout=30) as c:
        r = c.post(
            "/api/v1/capture-session",
            json={"session_id": "s-1", "client_name": "cursor", "server_name": "files-mcp"},
            headers=ingest,
        )
        assert r.status_code == 200, r.text
        ids = []
        for i, latency in enumerate((5, 15, 25, 35)):
            body = {
                "session_id": "s-1",
                "primitive_name": "read_file",
                "primitive_type": "resource",
                "success": i != 3,
                "latency": latency,
            }
            ids.append(c.post("/api/v1/capture-event", json=body, headers=ingest).json())
        bad = c.post(
            "/api/v1/capture-event", json={"session_id": "s-1", "latency": "x"}, headers=ingest
        )
        assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
        assert c.post("/api/v1/capture-event", json={}).status_code == 401
        detail = c.get("/api/mcp/sessions/s-1", headers=read).json()
        assert [x["event_id"] for x in detail["calls"]] == [i["event_id"] for i in ids]
        assert detail["session"]["server_name"] == "files-mcp"
        (tool,) = c.get("/api/mcp/tools", headers=read).json()["tools"]
        assert (tool["calls"], tool["errors"], tool["p50_latency_ms"]) == (4, 1, 20.0)
    assert server.stop() == 0
    stored = server.query("SELECT event_id FROM mcp_events WHERE org = 'acme' ORDER BY seq")
    assert [r[0] for r in stored] == [i["event_id"] for i in ids]
    assert server.query("SELECT count(*) FROM tool_calls WHERE origin = 'mcp'") == [(4,)]
