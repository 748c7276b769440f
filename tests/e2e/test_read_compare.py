"""`GET /api/runs/compare` over HTTP: in process (ReadApi on a tmp store with known rows) for the
shape, the org gate and the 403/404/422 cases; then on the real server fed two OTLP traces.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

with warnings.catch_warnings():
    # Starlette asks for the `httpx2` fork; `httpx` is what the test extras install and works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from collector.api.ratelimit import SlidingWindowLimiter
from collector.auth.keys import Authenticator
from collector.store.writer import Store
from tests.collector.store.test_query import insert, rid, run_row, span, span_run
from tests.e2e.server import KEYS, Server
from tests.e2e.test_read_api import OTHER_READ, READ, SUMMARY_KEYS, app_client, bearer
from tests.otlp_factory import agent_trace, export_request
from tests.stores import service_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with service_store(tmp_path) as s:
        yield s


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    auth = Authenticator(store)
    for (org, scope), key in KEYS.items():
        auth.declare(org, scope, key)  # type: ignore[arg-type]
    insert(store, "runs", [run_row(1), run_row(2, cost_usd=0.0105), run_row(3, workflow_name="b")])
    insert(store, "runs", [run_row(4, org="globex")])
    spans = [
        span(1, 1, "llm", 0.5, model="gpt-4o", input_tokens=10, output_tokens=2, cost_usd=0.01),
        span(1, 2, "tool", 1.0, tool_name="search"),
        span(2, 1, "llm", 0.5, model="gpt-4o", input_tokens=15, output_tokens=2, cost_usd=0.0125),
        span(2, 2, "tool", 0.7, tool_name="fetch"),
        span(2, 3, "tool", 1.0, tool_name="search"),
    ]
    insert(store, "spans", spans)
    insert(store, "span_runs", [span_run(s, rid(int(s["trace_id"], 16))) for s in spans])
    with app_client(store, auth, SlidingWindowLimiter(10_000)) as c:
        yield c


def compare(c: TestClient, a: str | None, b: str | None, key: str = READ) -> httpx.Response:
    params = {k: v for k, v in (("run_a", a), ("run_b", b)) if v is not None}
    return c.get("/api/runs/compare", params=params, headers=bearer(key))


def test_two_runs_side_by_side(client: TestClient) -> None:
    r = compare(client, rid(1), rid(2))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"workflow_name", "run_a", "run_b", "totals", "steps", "tools"}
    assert body["workflow_name"] == "triage"
    assert set(body["run_a"]) == SUMMARY_KEYS and body["run_b"]["id"] == rid(2)
    t = body["totals"]
    assert t["cost_usd"] == {"a": "0.001000", "b": "0.010500", "delta": "0.009500"}
    assert t["duration_ms"] == {"a": 1000, "b": 2000, "delta": 1000}
    assert t["total_tokens"]["delta"] == 100
    assert [(s["kind"], s["name"], s["match"]) for s in body["steps"]] == [
        ("llm", "gpt-4o", "both"),
        ("tool", "fetch", "only_b"),
        ("tool", "search", "both"),
    ]
    llm = body["steps"][0]
    assert llm["cost_delta_usd"] == "0.002500" and llm["total_tokens_delta"] == 5
    assert llm["duration_delta_ms"] == 0.0 and llm["a"]["offset_ms"] == 500.0
    assert body["steps"][1]["a"] is None and body["steps"][1]["cost_delta_usd"] is None
    tools = body["tools"]
    assert tools["sequence_a"] == ["search"] and tools["sequence_b"] == ["fetch", "search"]
    assert tools["added"] == ["fetch"] and tools["removed"] == [] and tools["reordered"] == []
    assert tools["edit_script"][0] == {
        "op": "insert",
        "a_start": 0,
        "a_end": 0,
        "b_start": 0,
        "b_end": 1,
        "a": [],
        "b": ["fetch"],
    }
    assert tools["edit_distance"] == 1 and tools["identical"] is False
    # The reverse comparison negates the deltas.
    back = compare(client, rid(2), rid(1)).json()
    assert back["totals"]["cost_usd"]["delta"] == "-0.009500"
    assert back["tools"]["removed"] == ["fetch"]


@pytest.mark.parametrize(
    ("a", "b", "fields"),
    [(None, None, ["run_a", "run_b"]), ("x", None, ["run_b"]), ("", "x", ["run_a"])],
)
def test_a_missing_parameter_is_422(
    client: TestClient, a: str | None, b: str | None, fields: list[str]
) -> None:
    r = compare(client, a, b)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert [d["field"] for d in r.json()["details"]] == fields


def test_missing_or_foreign_runs_are_404_and_other_workflows_422(client: TestClient) -> None:
    for a, b in [(rid(1), "nope"), ("nope", rid(1)), (rid(1), rid(4))]:  # rid(4) is globex's
        r = compare(client, a, b)
        assert (r.status_code, r.json()["code"]) == (404, "not_found"), (a, b)
    assert compare(client, rid(4), rid(4), key=OTHER_READ).status_code == 200
    mixed = compare(client, rid(1), rid(3))
    assert (mixed.status_code, mixed.json()["code"]) == (422, "workflow_mismatch")
    assert mixed.json()["details"][0]["field"] == "run_b" and mixed.json()["error"]


def test_the_org_setting_gates_the_route_with_403(client: TestClient, store: Store) -> None:
    # The service creates each declared org's row at start; here the test writes acme's.
    settings = '{"compare_enabled": false}'
    store.call(lambda cur: cur.execute("INSERT INTO orgs VALUES ('acme', now(), ?)", [settings]))
    r = compare(client, rid(1), rid(2))
    assert r.status_code == 403
    assert set(r.json()) == {"error", "code"} and r.json()["code"] == "plan_required"
    assert compare(client, None, None).status_code == 403  # the gate comes before the params
    assert compare(client, rid(4), rid(4), key=OTHER_READ).status_code == 200  # per org
    assert client.get(f"/api/runs/{rid(1)}").status_code == 200  # only compare is gated


def test_compare_is_not_taken_for_a_run_id(client: TestClient) -> None:
    r = client.get("/api/runs/compare")
    assert r.status_code == 422  # the compare route, not the run detail's 404
    assert client.post("/api/runs/compare").status_code == 405


# -- the real server --------------------------------------------------------------------------


def _same_workflow(seed: int, start_ns: int) -> bytes:
    spans = agent_trace(6, rng=random.Random(seed), start_ns=start_ns)
    for s in spans:  # the factory picks a random agent name; both runs must share one
        for attr in s.attributes:
            if attr.key == "gen_ai.agent.name":
                attr.value.string_value = "compare-e2e"
    return export_request(spans).SerializeToString()


def test_compare_two_runs_sent_over_otlp(server: Server) -> None:
    start = time.time_ns() - 60 * 10**9
    ingest = {**bearer(KEYS[("acme", "ingest")]), "Content-Type": "application/x-protobuf"}
    for seed in (1, 2):
        r = httpx.post(
            f"{server.base_url}/v1/traces", content=_same_workflow(seed, start), headers=ingest
        )
        assert r.status_code == 200, r.text
    with httpx.Client(base_url=server.api_url, timeout=30, headers=bearer(READ)) as c:
        deadline = time.monotonic() + 20
        while len(runs := c.get("/api/runs").json()["runs"]) < 2:
            assert time.monotonic() < deadline, "the two runs were not derived in 20 s"
            time.sleep(0.5)
        assert {x["workflow_name"] for x in runs} == {"compare-e2e"}
        body = c.get("/api/runs/compare", params={"run_a": runs[0]["id"], "run_b": runs[1]["id"]})
        assert body.status_code == 200, body.text
        compared = body.json()
        assert [s["match"] for s in compared["steps"]].count("both") >= 3  # 3 LLM calls each
        assert len(compared["tools"]["sequence_a"]) == 2
        assert compared["totals"]["llm_call_count"] == {"a": 3, "b": 3, "delta": 0}
        r = c.get(
            "/api/runs/compare",
            params={"run_a": runs[0]["id"], "run_b": runs[1]["id"]},
            headers=bearer(OTHER_READ),
        )
        assert r.status_code == 404
