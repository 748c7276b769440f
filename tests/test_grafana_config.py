"""The Grafana files in `config/grafana/`: the dashboard's Infinity queries name routes the read
API serves, and, against a real server holding a few runs and reached the way the provisioned
datasource reaches it, every query answers 200 with rows that have every declared column.
"""

from __future__ import annotations

import json
import random
import re
import string
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.routing import Match, Route

from collector.auth.keys import Authenticator
from collector.read.api import ReadApi
from collector.store.lake import StoreSettings
from collector.store.writer import Store
from tests.e2e.server import KEYS, Server, make_server
from tests.otlp_factory import agent_trace, export_request

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "config" / "grafana"
INFINITY = "yesoreyeram-infinity-datasource"
COLUMN_TYPES = {"string", "number", "timestamp", "timestamp_epoch", "timestamp_epoch_s", "boolean"}
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GRAFANA / "agentledger-dashboard.json").read_text())
    return data


def datasource() -> dict[str, Any]:
    doc = yaml.safe_load((GRAFANA / "datasource.yaml").read_text())
    (ds,) = doc["datasources"]
    assert isinstance(ds, dict)
    return ds


def queries() -> list[tuple[str, dict[str, Any], int | None]]:
    """(where, Infinity query, relative-time hours) of every panel target and query variable."""
    found: list[tuple[str, dict[str, Any], int | None]] = []
    for panel in dashboard()["panels"]:
        hours = None
        if "timeFrom" in panel:
            m = re.fullmatch(r"(\d+)h", panel["timeFrom"])
            assert m, f"panel {panel['title']}: timeFrom {panel['timeFrom']!r} is not N hours"
            hours = int(m.group(1))
        found += [(f"panel {panel['title']!r}", t, hours) for t in panel["targets"]]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            found.append((f"variable {var['name']!r}", var["query"]["infinityQuery"], None))
    return found


def api_routes(tmp_path: Path) -> list[Route]:
    # routes() reads neither the store nor the keys: an unopened store is enough to list them.
    store = Store(StoreSettings(catalog=str(tmp_path / "c.ducklake"), data_path=str(tmp_path)))
    return ReadApi(store, Authenticator(store)).routes()


def route_of(path: str, routes: list[Route]) -> str | None:
    scope = {"type": "http", "path": path, "method": "GET"}
    for r in routes:
        match, _ = r.matches(scope)
        if match is Match.FULL:
            return r.path
    return None


# -- the files alone ------------------------------------------------------------------------


def test_the_dashboard_has_the_panels_of_the_doc_and_the_issue() -> None:
    titles = [p["title"] for p in dashboard()["panels"]]
    assert titles == [
        "Workflow cost (24h)",
        "Recent runs",
        "Cost over time by workflow",
        "Error rate",
        "Top tools (${workflow})",
        "Top models",
    ]
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(set(ids)) == len(ids)
    names = {v["name"] for v in dashboard()["templating"]["list"]}
    assert names == {"datasource", "workflow"}


def test_every_query_is_an_infinity_backend_json_query_of_a_served_route(tmp_path: Path) -> None:
    routes = api_routes(tmp_path)
    served = {r.path for r in routes}
    for where, q, _ in queries():
        assert q["datasource"]["type"] == INFINITY, where
        assert (q["type"], q["source"], q["parser"]) == ("json", "url", "backend"), where
        assert q["columns"], f"{where} declares no columns"
        for c in q["columns"]:
            assert c["selector"] and c["text"] and c["type"] in COLUMN_TYPES, (where, c)
        # Relative to the datasource's base URL, so the dashboard names no host.
        assert q["url"].startswith("/api/"), where
        path = _VAR.sub("x", urllib.parse.urlsplit(q["url"]).path)
        route = route_of(path, routes)
        assert route in served, f"{where}: {q['url']} is not a read API route"
        assert route != "/api/runs/{run_id}" or path.endswith("/compare"), where


def test_the_datasource_sends_the_read_token_only_to_the_api() -> None:
    ds = datasource()
    assert ds["type"] == INFINITY and ds["url"] == "$AGENTLEDGER_API_URL"
    assert ds["jsonData"]["allowedHosts"] == [ds["url"]]
    assert ds["jsonData"]["httpHeaderName1"] == "Authorization"
    assert ds["secureJsonData"] == {"httpHeaderValue1": "Bearer $AGENTLEDGER_READ_TOKEN"}
    assert "AGENTLEDGER_READ_TOKEN" not in json.dumps(ds["jsonData"])  # not in plain JSON
    uid = ds["uid"]
    (var,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "datasource"]
    assert var["query"] == INFINITY and var["current"]["value"] == uid


# -- against a real server ------------------------------------------------------------------


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Server]:
    server = make_server(tmp_path).start()
    try:
        start = time.time_ns() - 3600 * 10**9  # an hour ago: inside the 24h and 7d windows
        rng = random.Random(5)
        traces = [s for i in range(4) for s in agent_trace(8, rng, start + i * 10**9)]
        r = httpx.post(
            f"{server.base_url}/v1/traces",
            content=export_request(traces).SerializeToString(),
            headers={
                "Authorization": f"Bearer {KEYS[('acme', 'ingest')]}",
                "Content-Type": "application/x-protobuf",
            },
        )
        assert r.status_code == 200, r.text
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()


def expand(url: str, variables: dict[str, str]) -> str:
    """Grafana's interpolation of ${name} and ${name:percentencode} in a query URL."""
    return _VAR.sub(lambda m: urllib.parse.quote(variables[m.group(1)], safe=""), url)


def rows_at(body: Any, root: str) -> Any:
    for part in filter(None, root.split(".")):
        body = body[part]
    return body


def test_every_panel_query_answers_with_its_declared_columns(fed: Server) -> None:
    ds = datasource()
    env = {"AGENTLEDGER_API_URL": fed.api_url, "AGENTLEDGER_READ_TOKEN": KEYS[("acme", "read")]}
    # What Grafana does with the provisioning file: expand $NAME from its environment.
    base = string.Template(ds["url"]).substitute(env)
    header = {
        ds["jsonData"]["httpHeaderName1"]: string.Template(
            ds["secureJsonData"]["httpHeaderValue1"]
        ).substitute(env)
    }
    now_ms = time.time_ns() // 10**6
    with httpx.Client(base_url=base, headers=header, timeout=30) as c:
        deadline = time.monotonic() + 20
        while len(c.get("/api/runs").json()["runs"]) < 4:
            assert time.monotonic() < deadline, "the runs were not derived in 20 s"
            time.sleep(0.5)
        values = {"workflow": ""}
        ordered = sorted(queries(), key=lambda x: not x[0].startswith("variable"))
        for where, q, hours in ordered:
            span_ms = (hours or 7 * 24) * 3600 * 1000  # the panel's timeFrom, else the 7d default
            variables = {"__from": str(now_ms - span_ms), "__to": str(now_ms), **values}
            url = expand(q["url"], variables)
            r = c.get(url)
            assert r.status_code == 200, f"{where}: {url} → {r.status_code} {r.text}"
            rows = rows_at(r.json(), q["root_selector"])
            assert rows, f"{where}: {url} gave no rows at {q['root_selector']!r}"
            for row in rows if isinstance(rows, list) else [rows]:
                missing = {col["selector"] for col in q["columns"]} - set(row)
                assert not missing, f"{where}: rows lack {missing}"
            if where == "variable 'workflow'":
                values["workflow"] = rows[0]["workflow_name"]
