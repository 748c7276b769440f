"""POST /v1/track against the real server: the doc's example sent with curl, idempotency
across a restart, and every acknowledged event in the store afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import KEYS, Server, make_server

INGEST, ADMIN, READ = (KEYS[("acme", s)] for s in ("ingest", "admin", "read"))

# The doc's request, reconstructed from its example response (the doc shows no literal curl).
# Its `occurred_at` (2026-05-06) is over 90 days old now, so it is left to default to receipt.
CURL = """curl -sS -X POST "$BASE/v1/track" \\
  -H "Authorization: Bearer $KEY" \\
  -H "Content-Type: application/json" \\
  -H "Idempotency-Key: $RUN_ID" \\
  -d '{
    "agent_id": "support-classifier",
    "task_type": "email_classification",
    "outcome": "success",
    "agent_duration_seconds": 4
  }'"""


def require_track(server: Server) -> None:
    r = httpx.post(f"{server.base_url}/v1/track", json={})
    if r.status_code == 404:
        pytest.fail(
            "POST /v1/track is 404: RoiApi is not mounted. In collector/service.py build "
            "RoiApi in start() after the store opens, call its create_tables(), and add "
            "*self._roi.routes() to _api_routes()."
        )


def curl(server: Server, run_id: str) -> dict[str, object]:
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed; the doc's example is a curl command")
    env = {"BASE": server.base_url, "KEY": INGEST, "RUN_ID": run_id, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        ["bash", "-c", CURL + ' -w "\\n%{http_code}"'], env=env, capture_output=True, text=True,
        timeout=30, check=True,
    )  # fmt: skip
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "201", out.stdout
    parsed: dict[str, object] = json.loads(body)
    return parsed


def test_the_docs_example_with_curl_and_a_restart(tmp_path: Path) -> None:
    server = make_server(tmp_path).start()
    try:
        require_track(server)
        patch = httpx.patch(
            f"{server.base_url}/v1/settings",
            headers={"Authorization": f"Bearer {ADMIN}"},
            json={"hourly_rate": 45, "currency": "EUR"},
        )
        assert patch.status_code == 200, patch.text
        first = curl(server, "run-42")
        expected = {
            "agent_id": "support-classifier", "task_type": "email_classification",
            "outcome": "success", "resolved_baseline_minutes": 4.0,
            "resolved_baseline_source": "builtin", "resolved_hourly_rate": 45, "currency": "EUR",
            "agent_duration_seconds": 4, "hours_saved": 0.066, "cost_saved": 2.97,
            "agent_cost": None, "resolved_cost_source": "none", "net_saved": 2.97,
        }  # fmt: skip
        assert {k: first[k] for k in expected} == expected
        assert str(first["event_id"]).startswith("evt_")
        events = httpx.get(
            f"{server.base_url}/v1/events", headers={"Authorization": f"Bearer {READ}"}
        ).json()["events"]
        assert [e["event_id"] for e in events] == [first["event_id"]]
    finally:
        assert server.stop() == 0
    again = make_server(tmp_path).start()  # same data dir: the key must survive the restart
    try:
        assert curl(again, "run-42") == first
        assert curl(again, "run-43")["event_id"] != first["event_id"]
    finally:
        assert again.stop() == 0
    assert again.query("SELECT count(*) FROM roi_events")[0][0] == 2
