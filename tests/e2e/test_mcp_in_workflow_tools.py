"""MCP calls that carry a run's trace id count in that workflow's tool breakdown."""

from __future__ import annotations

import time

import httpx

from tests.e2e.server import KEYS, Server
from tests.e2e.test_runs import _post, _trace

INGEST, READ = KEYS[("acme", "ingest")], KEYS[("acme", "read")]


def test_workflow_tools_include_mcp_calls_of_its_runs(server: Server) -> None:
    spans = _trace(3)
    _post(server, spans)
    trace_id = spans[0].trace_id.hex()
    with httpx.Client(base_url=server.api_url, timeout=30) as c:
        for latency in (10, 30):
            r = c.post(
                "/api/v1/capture-event",
                headers={"X-Org-Id": INGEST},
                json={
                    "session_id": "mcp-1", "primitive_name": "crm_lookup",
                    "primitive_type": "tool", "success": latency == 10, "latency": latency,
                    "metadata": {"trace_id": trace_id},
                },
            )  # fmt: skip
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 60
        while True:
            r = c.get(
                "/api/workflows/support-triage/tools",
                params={"from": "2000-01-01T00:00:00Z"},
                headers={"authorization": f"Bearer {READ}"},
            )
            tools = {t["tool_name"]: t for t in r.json().get("tools", [])} if r.is_success else {}
            if "crm_lookup" in tools:
                break
            assert time.monotonic() < deadline, r.text
            time.sleep(0.25)
    crm = tools["crm_lookup"]
    assert (crm["calls"], crm["error_rate"]) == (2, 0.5)
    assert crm["runs_using"] == 1
