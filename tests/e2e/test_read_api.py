"""The dashboard read API over HTTP: in process (ReadApi on a tmp store, known rows) for shapes,
auth, validation and rate limits; then against the real server fed OTLP spans, running the
seed doc's curl, CI and Slack scripts as written.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

with warnings.catch_warnings():
    # Starlette asks for the `httpx2` fork; `httpx` is what the test extras install and works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from collector.api.ratelimit import SlidingWindowLimiter
from collector.auth.keys import Authenticator
from collector.read.api import ReadApi
from collector.runs.upkeep import fill_run_tools
from collector.store.writer import Store
from tests.collector.store.test_query import T0, insert, rid, run_row, span, span_run
from tests.e2e.server import KEYS, Server
from tests.otlp_factory import agent_trace, export_request
from tests.stores import service_store

READ, OTHER_READ = KEYS[("acme", "read")], KEYS[("globex", "read")]
SUMMARY_KEYS = {
    "id",
    "workflow_name",
    "run_id_external",
    "status",
    "cost_usd",
    "total_tokens",
    "duration_ms",
    "llm_call_count",
    "tool_use_count",
    "started_at",
    "ended_at",
}
NOW = T0 + timedelta(hours=2)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with service_store(tmp_path) as s:
        yield s


@pytest.fixture
def auth(store: Store) -> Authenticator:
    a = Authenticator(store)
    for (org, scope), key in KEYS.items():
        a.declare(org, scope, key)  # type: ignore[arg-type]
    return a


def app_client(store: Store, auth: Authenticator, limiter: SlidingWindowLimiter) -> TestClient:
    api = ReadApi(store, auth, limiter, clock=lambda: NOW)
    return TestClient(Starlette(routes=api.routes()), headers=bearer(READ))


@pytest.fixture
def client(store: Store, auth: Authenticator) -> Iterator[TestClient]:
    insert(store, "runs", [run_row(1), run_row(2, status="error", cost_usd=0.0000015)])
    insert(
        store, "runs", [run_row(3, status="running"), run_row(9, org="globex", workflow_name="g")]
    )
    spans = [span(1, 1, "llm", 0.5, model="gpt-4o", cost_usd=0.001234, cost_source="computed")]
    spans.append(span(1, 2, "tool", 1.0, tool_name="search", tool_args="{}", tool_result="ok"))
    insert(store, "spans", spans)
    insert(store, "span_runs", [span_run(s, rid(1)) for s in spans])
    store.call(fill_run_tools)  # the tool-call rows the deriver writes beside each run
    with app_client(store, auth, SlidingWindowLimiter(10_000)) as c:
        yield c


# -- in process: shapes -----------------------------------------------------------------------


def test_run_list_shape_matches_the_doc(client: TestClient) -> None:
    r = client.get("/api/runs", params={"limit": 2})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"runs", "next_cursor", "total_count"} and body["total_count"] == 3
    first, second = body["runs"]
    assert set(first) == SUMMARY_KEYS
    assert first["id"] == rid(3) and first["status"] == "running"
    assert first["duration_ms"] is None and first["ended_at"] is None
    assert second["cost_usd"] == "0.000002"  # a decimal string, six places
    assert second["started_at"] == "2025-01-06T12:02:00.000Z"
    assert second["ended_at"] == "2025-01-06T12:02:02.000Z"
    rest = client.get("/api/runs", params={"limit": 2, "cursor": body["next_cursor"]}).json()
    assert [x["id"] for x in rest["runs"]] == [rid(1)] and rest["next_cursor"] is None
    assert rest["runs"][0]["cost_usd"] == "0.001000"


def test_run_list_filters_and_epoch_millisecond_windows(client: TestClient) -> None:
    def got(**params: Any) -> list[str]:
        return [x["id"] for x in client.get("/api/runs", params=params).json()["runs"]]

    assert got(status=["error", "running"], sort="started_at_asc") == [rid(2), rid(3)]
    assert got(status="error,running") == [rid(3), rid(2)]
    assert got(workflow="nope") == []
    assert got(cost_min="0.0005", cost_max="0.001") == [rid(1)]
    start = int((T0 + timedelta(minutes=1)).timestamp() * 1000)
    assert got(**{"from": str(start), "to": str(start + 60_000)}) == [rid(2), rid(1)]
    assert got(**{"from": "2025-01-06T12:02:00+00:00", "to": "2025-01-06T12:03:00Z"}) == [
        rid(3),
        rid(2),
    ]


def test_run_detail_and_cross_org_404(client: TestClient) -> None:
    body = client.get(f"/api/runs/{rid(1)}").json()
    assert set(body) == {
        "run",
        "child_runs",
        "child_run_count",
        "combined_cost_usd",
        "alert_events",
        "roi",  # an extension: the ROI events linked to the run (docs/roi.md)
        "evaluations",  # an extension: verdicts of output rules on the run (docs/logs.md)
    }
    run = body["run"]
    assert set(run) >= SUMMARY_KEYS and run["trace_id"] == f"{1:032x}"
    assert [c["model"] for c in run["llm_calls"]] == ["gpt-4o"]
    assert run["llm_calls"][0]["cost_usd"] == "0.001234"
    assert run["llm_calls"][0]["latency_ms"] == 250.0
    assert [t["tool_name"] for t in run["tool_events"]] == ["search"]
    assert run["tool_events"][0]["success"] is True
    assert body["combined_cost_usd"] == "0.001000" and body["alert_events"] == []
    missing = client.get(f"/api/runs/{rid(9)}")  # globex's run
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert client.get(f"/api/runs/{rid(9)}", headers=bearer(OTHER_READ)).status_code == 200


def test_workflows_stats_tools_overview_timeseries_alerts(client: TestClient) -> None:
    window = {"from": "2025-01-06T00:00:00Z", "to": "2025-01-06T23:59:59Z"}
    wf = client.get("/api/workflows", params=window).json()["workflows"]
    assert [w["workflow_name"] for w in wf] == ["triage"]
    assert wf[0]["run_count"] == 3 and wf[0]["error_rate"] == pytest.approx(1 / 3)
    assert wf[0]["total_cost_usd"] == "0.004002" and wf[0]["avg_duration_ms"] == 1500
    stats = client.get("/api/workflows/triage/stats", params=window).json()
    assert stats["interval"] == "1h" and len(stats["buckets"]) == 24
    noon = stats["buckets"][12]
    assert noon["time"] == "2025-01-06T12:00:00.000Z" and noon["runs"] == 3
    assert noon["errors"] == 1 and noon["cost_usd"] == "0.004002"
    tools = client.get("/api/workflows/triage/tools", params=window).json()["tools"]
    assert tools == [
        {
            "tool_name": "search",
            "calls": 1,
            "error_rate": 0.0,
            "p50_latency_ms": 250.0,
            "p95_latency_ms": 250.0,
            "runs_using": 1,
            "run_share": pytest.approx(1 / 3, abs=1e-6),
        }
    ]
    assert client.get("/api/workflows/nope/stats").status_code == 404
    assert client.get("/api/workflows/triage/tools", headers=bearer(OTHER_READ)).status_code == 404
    ov = client.get("/api/metrics/overview", params=window).json()
    assert ov["totals"]["run_count"] == 3 and ov["totals"]["cost_usd"] == "0.004002"
    assert ov["change"]["run_count"] is None and ov["top_models"][0]["model"] == "gpt-4o"
    assert ov["previous_to"] == "2025-01-05T23:59:59.999Z"
    series = client.get(
        "/api/metrics/timeseries", params={**window, "metric": "runs", "group_by": "status"}
    ).json()
    assert series == [
        {"time": "2025-01-06T12:00:00.000Z", "series": s, "value": 1}
        for s in ("error", "running", "success")
    ]
    alerts = client.get("/api/alert-events", params={"resolved": "false"}).json()
    assert alerts == {"alert_events": [], "next_cursor": None}


# -- in process: errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/runs", {"from": "yesterday"}, "from"),
        ("/api/runs", {"to": "2025-13-40"}, "to"),
        ("/api/runs", {"sort": "name"}, "sort"),
        ("/api/runs", {"limit": "0"}, "limit"),
        ("/api/runs", {"limit": "101"}, "limit"),
        ("/api/runs", {"limit": "ten"}, "limit"),
        ("/api/runs", {"cursor": "not-a-cursor"}, "cursor"),
        ("/api/runs", {"cost_min": "cheap"}, "cost_min"),
        ("/api/runs", {"cost_max": "nan"}, "cost_max"),
        ("/api/runs", {"status": "done"}, "status"),
        ("/api/runs", {"from": "2025-02-01", "to": "2025-01-01"}, "from"),
        ("/api/workflows", {"sort": "cost"}, "sort"),
        ("/api/workflows/triage/stats", {"interval": "1y"}, "interval"),
        ("/api/workflows/triage/stats", {"interval": "1s"}, "interval"),
        ("/api/alert-events", {"resolved": "maybe"}, "resolved"),
        ("/api/alert-events", {"cursor": "abc"}, "cursor"),
        ("/api/metrics/timeseries", {"metric": "joy"}, "metric"),
        ("/api/metrics/timeseries", {"metric": "runs", "group_by": "model"}, "metric"),
        ("/api/metrics/timeseries", {"group_by": "user"}, "group_by"),
    ],
)
def test_bad_parameters_are_422_with_details(
    client: TestClient, path: str, params: dict[str, str], field: str
) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "validation_error" and body["error"]
    assert field in [d["field"] for d in body["details"]]


def test_a_cursor_of_another_sort_is_refused(client: TestClient) -> None:
    cursor = client.get("/api/runs", params={"limit": 1}).json()["next_cursor"]
    r = client.get("/api/runs", params={"cursor": cursor, "sort": "cost_desc"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "cursor"


def test_auth_matrix(client: TestClient, auth: Authenticator) -> None:
    key, record = auth.create_key("acme", "read", "soon revoked")
    assert client.get("/api/runs", headers=bearer(key)).status_code == 200
    auth.revoke("acme", record.key_id)
    cases = {
        "missing_authorization": {"Authorization": ""},
        "invalid_api_key": bearer(KEYS[("acme", "ingest")]),
        "key_revoked": bearer(key),
    }
    cases["invalid_api_key "] = bearer(KEYS[("acme", "admin")])
    cases["invalid_api_key  "] = bearer("al_read_nothing")
    for code, headers in cases.items():
        r = client.get("/api/workflows", headers=headers)
        assert (r.status_code, r.json()["code"]) == (401, code.strip()), code


def test_only_get_and_a_json_405(client: TestClient) -> None:
    r = client.post("/api/runs", json={})
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    assert r.headers["allow"] == "GET"


def test_rate_limit_is_per_token_with_retry_after(store: Store, auth: Authenticator) -> None:
    clock = [0.0]
    limiter = SlidingWindowLimiter(300, 60.0, clock=lambda: clock[0])
    with app_client(store, auth, limiter) as c:
        for i in range(300):
            clock[0] = i * 0.1
            assert c.get("/api/alert-events").status_code == 200
        refused = c.get("/api/alert-events")
        assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
        assert refused.headers["retry-after"] == "31"  # the first request leaves at t=60
        assert c.get("/api/alert-events", headers=bearer(OTHER_READ)).status_code == 200
        clock[0] = 60.0
        assert c.get("/api/alert-events").status_code == 200


# -- the real server --------------------------------------------------------------------------


def wait_for_runs(server: Server, key: str = READ, timeout: float = 60.0) -> dict[str, Any]:
    """The first page of runs once the deriver (every ~1 s) has derived the spans sent."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.api_url, timeout=30) as c:
        while True:
            r = c.get("/api/runs", headers=bearer(key))
            assert r.status_code == 200, r.text
            if r.json()["runs"]:
                return dict(r.json())
            assert time.monotonic() < deadline, "no run was derived in time"
            time.sleep(0.25)


@pytest.fixture
def fed(server: Server) -> Server:
    start = time.time_ns() - 60 * 10**9
    body = export_request(agent_trace(6, start_ns=start)).SerializeToString()
    r = httpx.post(
        f"{server.base_url}/v1/traces",
        content=body,
        headers={**bearer(KEYS[("acme", "ingest")]), "Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 200, r.text
    return server


def test_spans_sent_over_otlp_become_a_run_with_detail(fed: Server) -> None:
    runs = wait_for_runs(fed)["runs"]
    assert set(runs[0]) == SUMMARY_KEYS and runs[0]["started_at"].endswith("Z")
    with httpx.Client(base_url=fed.api_url, timeout=30, headers=bearer(READ)) as c:
        detail = c.get(f"/api/runs/{runs[0]['id']}").json()["run"]
        assert len(detail["llm_calls"]) == 3 and len(detail["tool_events"]) == 2
        assert c.get(f"/api/runs/{runs[0]['id']}", headers=bearer(OTHER_READ)).status_code == 404
        assert c.get("/api/runs", headers=bearer(OTHER_READ)).json()["runs"] == []
        bad = c.get("/api/runs", params={"limit": 500})
        assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
        for key, code in [(KEYS[("acme", "ingest")], "invalid_api_key"), ("", None)]:
            r = c.get("/api/runs", headers={"Authorization": f"Bearer {key}" if key else ""})
            assert r.status_code == 401
            assert r.json()["code"] == (code or "missing_authorization")
        minted = c.post(
            "/api/keys", json={"scope": "read"}, headers=bearer(KEYS[("acme", "admin")])
        )
        key_id, secret = minted.json()["id"], minted.json()["key"]
        c.delete(f"/api/keys/{key_id}", headers=bearer(KEYS[("acme", "admin")]))
        assert c.get("/api/runs", headers=bearer(secret)).json()["code"] == "key_revoked"


def _doc_env(server: Server) -> dict[str, str]:
    return {**os.environ, "TRAKR_APP_URL": server.api_url, "TRAKR_READ_TOKEN": READ}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_docs_curl_example_runs_as_written(fed: Server) -> None:
    wait_for_runs(fed)
    script = """curl -sS "$TRAKR_APP_URL/api/runs?limit=10&sort=started_at_desc" \\
  -H "Accept: application/json" \\
  -H "Authorization: Bearer $TRAKR_READ_TOKEN"
"""
    out = subprocess.run(
        ["bash", "-c", script], env=_doc_env(fed), capture_output=True, text=True, check=True
    )
    assert len(json.loads(out.stdout)["runs"]) == 1


# "Post to Slack", step 3 of the doc, verbatim.
SLACK_SCRIPT = r"""# Requires: TRAKR_APP_URL, TRAKR_READ_TOKEN, SLACK_WEBHOOK_URL
TO="$(date -u +"%Y-%m-%dT%H:%M:%SZ")"
FROM="$(date -u -d '24 hours ago' +"%Y-%m-%dT%H:%M:%SZ")"

RESPONSE="$(curl -sS -f "$TRAKR_APP_URL/api/workflows?from=${FROM}&to=${TO}" \
  -H "Accept: application/json" \
  -H "Authorization: Bearer $TRAKR_READ_TOKEN")"

WORKFLOW_COUNT="$(echo "$RESPONSE" | jq '.workflows | length')"
TOTAL_COST="$(echo "$RESPONSE" | jq '[.workflows[].total_cost_usd | tonumber] | add // 0')"

SUMMARY="Trakr 24h: ${WORKFLOW_COUNT} workflows, \$${TOTAL_COST} total cost"

curl -sS -X POST "$SLACK_WEBHOOK_URL" \
  -H "Content-Type: application/json" \
  -d "{\"text\": \"${SUMMARY}\"}"
"""


class _Slack(http.server.BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:
        _Slack.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.skipif(
    shutil.which("curl") is None or shutil.which("jq") is None, reason="needs curl and jq"
)
def test_the_docs_ci_export_and_slack_scripts_run_as_written(fed: Server, tmp_path: Path) -> None:
    wait_for_runs(fed)
    ci = """TO="$(date -u +"%Y-%m-%dT%H:%M:%SZ")"
FROM="$(date -u -d '24 hours ago' +"%Y-%m-%dT%H:%M:%SZ")"
curl -sS -f "$TRAKR_APP_URL/api/workflows?from=${FROM}&to=${TO}" \\
  -H "Accept: application/json" \\
  -H "Authorization: Bearer $TRAKR_READ_TOKEN"
"""
    out = subprocess.run(
        ["bash", "-c", ci], env=_doc_env(fed), capture_output=True, text=True, check=True
    )
    assert len(json.loads(out.stdout)["workflows"]) == 1
    script = SLACK_SCRIPT
    hook = http.server.HTTPServer(("127.0.0.1", 0), _Slack)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        env = {**_doc_env(fed), "SLACK_WEBHOOK_URL": f"http://127.0.0.1:{hook.server_port}/x"}
        subprocess.run(["bash", "-c", script], env=env, check=True, capture_output=True)
    finally:
        hook.shutdown()
        hook.server_close()
    text = json.loads(_Slack.received[-1])["text"]
    assert text.startswith("Trakr 24h: 1 workflows, $") and text.endswith(" total cost")
