"""Tests of `collector/auth/settings.py`: an org's settings in two layers (the config file's under
the routes'), `GET`/`PATCH /api/org-settings` and the ROI and compare routes reading the same
document, over a real store in a temp dir through Starlette's client.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette asks for the `httpx2` fork; httpx works
    from starlette.testclient import TestClient

from collector.api.routes import routes
from collector.auth.keys import Authenticator, ensure_org
from collector.auth.settings import PerOrgSettings, from_config, merge_patch
from collector.config import org_settings_groups
from collector.configparse import EnvStr
from collector.read.api import ReadApi
from collector.roi.api import RoiApi
from collector.roi.tasktypes import load_catalogue
from collector.store.writer import Store
from tests.e2e.server import KEYS
from tests.stores import service_store

READ, ADMIN = KEYS[("acme", "read")], KEYS[("acme", "admin")]
OTHER_ADMIN = KEYS[("globex", "admin")]
GROUPS = org_settings_groups()
DECLARED = {"acme": {"hourly_rate": 45, "currency": "EUR", "fx_rates": {"EUR": 0.9}}}


@dataclass
class Org:
    client: TestClient
    store: Store
    settings: PerOrgSettings

    def get(self, path: str, key: str = ADMIN) -> Any:
        return self.client.get(path, headers={"Authorization": f"Bearer {key}"})

    def patch(self, path: str, body: dict[str, Any], key: str = ADMIN) -> Any:
        return self.client.patch(path, json=body, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def org(tmp_path: Path) -> Iterator[Org]:
    with service_store(tmp_path) as store:
        auth = Authenticator(store)
        auth.load()
        for (name, scope), key in KEYS.items():
            auth.declare(name, scope, key)  # type: ignore[arg-type]
            ensure_org(store, name)
        settings = PerOrgSettings(store, GROUPS, DECLARED)
        roi = RoiApi(store, auth, load_catalogue(), org_settings=settings)
        roi.create_tables()
        operations = [
            *settings.operations(auth),
            *roi.operations(),
            *ReadApi(store, auth, org_settings=settings).operations(),
        ]
        with TestClient(Starlette(routes=routes(operations))) as client:
            yield Org(client, store, settings)


def test_every_setting_is_shown_with_its_source(org: Org) -> None:
    r = org.get("/api/org-settings")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["org"] == "acme"
    assert set(body["settings"]) == {k for g in GROUPS for k in g.properties}
    assert body["settings"]["compare_enabled"] is True
    assert body["settings"]["hourly_rate"] == 45 and body["settings"]["currency"] == "EUR"
    assert body["settings"]["limits"] == {"requests_per_second": 1000, "monthly_events": None}
    assert body["sources"]["hourly_rate"] == "config"
    assert body["sources"]["compare_enabled"] == "default"
    other = org.get("/api/org-settings", OTHER_ADMIN).json()
    assert other["settings"]["hourly_rate"] == 50 and other["sources"]["hourly_rate"] == "default"


def test_only_an_admin_key_of_the_org(org: Org) -> None:
    assert org.get("/api/org-settings", READ).status_code == 401
    assert org.patch("/api/org-settings", {"compare_enabled": False}, READ).status_code == 401


def test_compare_enabled_is_set_by_the_route_and_gates_compare(org: Org) -> None:
    compare = "/api/runs/compare?run_a=a&run_b=b"
    assert org.get(compare, READ).status_code == 404  # on by default: no such runs
    r = org.patch("/api/org-settings", {"compare_enabled": False})
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["compare_enabled"] is False
    assert r.json()["sources"]["compare_enabled"] == "api"
    assert org.get(compare, READ).json()["code"] == "plan_required"
    assert org.get(compare, KEYS[("globex", "read")]).status_code == 404  # one org's setting
    org.patch("/api/org-settings", {"compare_enabled": None})  # back to the default
    assert org.get(compare, READ).status_code == 404


def test_a_key_set_by_a_route_wins_over_the_file_and_null_hands_it_back(org: Org) -> None:
    assert org.get("/v1/settings").json()["hourly_rate"] == 45  # the file's
    assert org.patch("/v1/settings", {"hourly_rate": 60}).json()["hourly_rate"] == 60
    shown = org.get("/api/org-settings").json()
    assert shown["settings"]["hourly_rate"] == 60 and shown["sources"]["hourly_rate"] == "api"
    assert shown["settings"]["currency"] == "EUR"  # the file's, untouched
    # Only what a route set is stored: the file's values are never copied into the store.
    (stored,) = org.store.query("SELECT settings FROM orgs WHERE name = 'acme'")[0]
    assert stored == '{"hourly_rate": 60}'
    back = org.patch("/api/org-settings", {"hourly_rate": None}).json()
    assert back["settings"]["hourly_rate"] == 45 and back["sources"]["hourly_rate"] == "config"


def test_bad_values_are_a_422_naming_each_field(org: Org) -> None:
    r = org.patch(
        "/api/org-settings",
        {
            "compare_enabled": "no",
            "currency": "euro",
            "limits": {"monthly_events": 0},
            "custom_task_types": {"ticket_triage": {"baseline_minutes": 3}},
            "colour": "blue",
        },
    )
    assert r.status_code == 422, r.text
    fields = {d["field"] for d in r.json()["details"]}
    assert fields == {
        "compare_enabled",
        "currency",
        "limits.monthly_events",
        "custom_task_types.ticket_triage",
        "colour",
    }
    assert org.get("/api/org-settings").json()["sources"]["compare_enabled"] == "default"


def test_the_document_merges_the_layers_as_a_merge_patch() -> None:
    declared = {"limits": {"requests_per_second": 10}, "plan": "pro"}
    stored = {"limits": {"monthly_events": 5}}
    assert merge_patch(declared, stored) == {
        "limits": {"requests_per_second": 10, "monthly_events": 5},
        "plan": "pro",
    }


def test_config_values_from_the_environment_are_typed_by_their_schema() -> None:
    raw = {
        "hourly_rate": EnvStr("45.5"),
        "compare_enabled": EnvStr("false"),
        "limits": {"monthly_events": EnvStr("100")},
        "currency": EnvStr("EUR"),
        "fx_rates": {"EUR": EnvStr("0.9")},
    }
    document, problems = from_config(raw, GROUPS)
    assert problems == []
    assert document == {
        "hourly_rate": 45.5,
        "compare_enabled": False,
        "limits": {"monthly_events": 100},
        "currency": "EUR",
        "fx_rates": {"EUR": 0.9},
    }
