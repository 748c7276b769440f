"""Per-org settings end to end: declared in the config file (`auth.orgs[].settings`), shown and
changed through `/api/org-settings` and `/v1/settings`, obeyed by the run comparison gate and by
`/v1/track`, and a route's change kept across a restart while the file's values stay the file's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import KEYS, make_server

ADMIN = {"Authorization": f"Bearer {KEYS[('acme', 'admin')]}"}
READ = {"Authorization": f"Bearer {KEYS[('acme', 'read')]}"}
INGEST = {"Authorization": f"Bearer {KEYS[('acme', 'ingest')]}"}
GLOBEX_READ = {"Authorization": f"Bearer {KEYS[('globex', 'read')]}"}
FILE = (
    '{compare_enabled: false, hourly_rate: "${env:ACME_RATE}", currency: EUR, fx_rates: {EUR: 0.9}}'
)
COMPARE = "/api/runs/compare?run_a=a&run_b=b"


def _settings(base: str) -> dict[str, Any]:
    r = httpx.get(f"{base}/api/org-settings", headers=ADMIN)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_settings_from_the_file_and_the_routes(tmp_path: Path) -> None:
    server = make_server(tmp_path, org_settings={"acme": FILE})
    server.env["ACME_RATE"] = "45"
    server.start()
    try:
        base = server.base_url
        shown = _settings(base)
        assert shown["settings"]["compare_enabled"] is False
        assert shown["settings"]["hourly_rate"] == 45
        assert shown["sources"] == {
            **{key: "default" for key in shown["sources"]},
            "compare_enabled": "config",
            "hourly_rate": "config",
            "currency": "config",
            "fx_rates": "config",
        }
        assert httpx.get(f"{base}{COMPARE}", headers=READ).json()["code"] == "plan_required"
        assert httpx.get(f"{base}{COMPARE}", headers=GLOBEX_READ).status_code == 404
        track = {"agent_id": "a", "task_type": "email_classification", "outcome": "success"}
        tracked = httpx.post(f"{base}/v1/track", headers=INGEST, json=track).json()
        assert (tracked["resolved_hourly_rate"], tracked["currency"]) == (45, "EUR")

        r = httpx.patch(f"{base}/api/org-settings", headers=ADMIN, json={"compare_enabled": True})
        assert r.status_code == 200 and r.json()["sources"]["compare_enabled"] == "api", r.text
        assert httpx.get(f"{base}{COMPARE}", headers=READ).status_code == 404  # on: no such runs
        r = httpx.patch(f"{base}/v1/settings", headers=ADMIN, json={"hourly_rate": 60})
        assert r.status_code == 200 and r.json()["hourly_rate"] == 60
        bad = httpx.patch(f"{base}/api/org-settings", headers=ADMIN, json={"plan": "gold"})
        assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "plan"
    finally:
        server.stop()

    server.start()  # the routes' values are stored; the file's are read from the file again
    try:
        shown = _settings(server.base_url)
        assert shown["settings"]["compare_enabled"] is True
        assert shown["settings"]["hourly_rate"] == 60
        assert shown["sources"]["hourly_rate"] == "api"
        assert shown["sources"]["currency"] == "config"
        back = httpx.patch(
            f"{server.base_url}/api/org-settings", headers=ADMIN, json={"hourly_rate": None}
        )
        assert back.json()["settings"]["hourly_rate"] == 45
    finally:
        server.stop()


def test_a_bad_setting_in_the_file_stops_the_start_with_its_path(tmp_path: Path) -> None:
    server = make_server(tmp_path, org_settings={"acme": "{compare_enabled: maybe}"})
    try:
        server.start(timeout=30)
    except RuntimeError as e:
        assert "auth.orgs[0].settings.compare_enabled: must be true or false" in str(e)
    else:
        server.stop()
        raise AssertionError("the server started with a bad setting")
