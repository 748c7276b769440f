"""The ROI API in process: a tmp store, declared keys, Starlette's test client.

Covers the doc's example, errors, idempotency (replays, other keys, restarts, concurrency),
settings, rate limits, quota, and the event and report reads.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette asks for the `httpx2` fork; httpx works
    from starlette.testclient import TestClient

from collector.auth.keys import Authenticator, ensure_org
from collector.prices.layers import stack
from collector.roi.api import RoiApi
from collector.roi.tasktypes import load_catalogue
from collector.store.lake import StoreSettings
from collector.store.writer import Store
from processors.cost import CostConfig, CostProcessor
from tests.e2e.server import KEYS

INGEST, READ, ADMIN = (KEYS[("acme", s)] for s in ("ingest", "read", "admin"))
OTHER_INGEST = "al_live_aaaa0009_" + "9" * 40
EXAMPLE = {"agent_id": "support-classifier", "task_type": "email_classification",
           "outcome": "success", "agent_duration_seconds": 4}  # fmt: skip
DOC_RESPONSE_KEYS = [
    "event_id", "agent_id", "task_type", "outcome", "resolved_baseline_minutes",
    "resolved_baseline_source", "resolved_hourly_rate", "currency", "agent_duration_seconds",
    "hours_saved", "cost_saved", "agent_cost", "resolved_cost_source", "net_saved", "occurred_at",
]  # fmt: skip


def bearer(key: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **more}


def open_store(tmp: Path) -> Store:
    s = Store(StoreSettings(catalog=str(tmp / "cat.ducklake"), data_path=str(tmp / "d")))
    s.open()
    return s


def make_api(
    store: Store, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> tuple[RoiApi, Authenticator]:
    auth = Authenticator(store)
    for (org, scope), key in KEYS.items():
        auth.declare(org, scope, key)  # type: ignore[arg-type]
        ensure_org(store, org)
    auth.declare("acme", "ingest", OTHER_INGEST)
    api = RoiApi(store, auth, load_catalogue(), CostProcessor(CostConfig(), stack(None)), clock)
    api.create_tables()
    return api, auth


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    api, _ = make_api(store)
    with TestClient(Starlette(routes=api.routes())) as c:
        yield c


def eur(client: TestClient, **more: Any) -> None:
    settings = {"hourly_rate": 45, "currency": "EUR", "fx_rates": {"EUR": 0.92}, **more}
    r = client.patch("/v1/settings", headers=bearer(ADMIN), json=settings)
    assert r.status_code == 200, r.text


def test_the_docs_example(client: TestClient) -> None:
    eur(client)
    r = client.post("/v1/track", headers=bearer(INGEST), json=EXAMPLE)
    assert r.status_code == 201, r.text
    body = r.json()
    assert list(body) == DOC_RESPONSE_KEYS
    assert body["event_id"].startswith("evt_") and len(body["event_id"]) == 30
    expected = {"resolved_baseline_minutes": 4.0, "resolved_baseline_source": "builtin",
                "resolved_hourly_rate": 45, "currency": "EUR", "agent_duration_seconds": 4,
                "hours_saved": 0.066, "cost_saved": 2.97, "agent_cost": None,
                "resolved_cost_source": "none", "net_saved": 2.97}  # fmt: skip
    assert {k: body[k] for k in expected} == expected
    assert '"resolved_hourly_rate": 45,' in r.text  # 45, not 45.0, as the doc shows
    received = datetime.fromisoformat(body["occurred_at"])
    assert abs(received - datetime.now(UTC)) < timedelta(seconds=10)


def test_a_task_is_priced_as_of_its_occurred_at(store: Store) -> None:
    # DeepSeek's list price moved on 2025-09-05 (0.27 -> 0.56 USD a million input tokens): a
    # task that occurred before, reported after, costs the earlier price.
    api, _ = make_api(store, lambda: datetime(2025, 9, 20, 12, tzinfo=UTC))
    task = {**EXAMPLE, "model": "deepseek-chat", "tokens_in": 1_000_000, "tokens_out": 0}
    with TestClient(Starlette(routes=api.routes())) as c:
        then = {**task, "occurred_at": "2025-09-01T12:00:00Z"}
        earlier = c.post("/v1/track", headers=bearer(INGEST), json=then).json()
        now = c.post("/v1/track", headers=bearer(INGEST), json=task).json()
    assert (earlier["agent_cost"], earlier["resolved_cost_source"]) == (0.27, "computed")
    assert (now["agent_cost"], now["resolved_cost_source"]) == (0.56, "computed")


def test_errors_as_the_doc_table(client: TestClient) -> None:
    def post(headers: dict[str, str], body: Any = EXAMPLE) -> httpx.Response:
        return client.post("/v1/track", headers=headers, json=body)

    cases = [
        (post({}), 401, "missing_authorization"),
        (post(bearer("hh_live_nope")), 401, "invalid_api_key"),
        (post(bearer(READ)), 401, "invalid_api_key"),
        (post(bearer(INGEST), {"agent_id": "a"}), 422, "validation_error"),
        (post(bearer(INGEST), {**EXAMPLE, "task_type": "no_such"}), 422, "unknown_task_type"),
        (post(bearer(INGEST), {**EXAMPLE, "occurred_at": "2026-05-06T10:42:00.000Z"}), 422,
         "occurred_at_out_of_range"),
        (post(bearer(INGEST), {**EXAMPLE, "occurred_at": (datetime.now(UTC) + timedelta(
            hours=25)).isoformat()}), 422, "occurred_at_out_of_range"),
    ]  # fmt: skip
    for r, status, code in cases:
        assert (r.status_code, r.json()["code"]) == (status, code), r.text
        assert set(r.json()) <= {"error", "code", "details"}
    bad = post(bearer(INGEST), {"agent_id": "a"}).json()["details"]
    assert {d["field"] for d in bad} == {"task_type", "outcome"}
    inline = post(bearer(INGEST), {**EXAMPLE, "task_type": "no_such", "human_baseline_minutes": 2})
    assert inline.status_code == 201 and inline.json()["resolved_baseline_source"] == "request"


def test_idempotency_replays_across_keys_and_restarts(store: Store, tmp_path: Path) -> None:
    api, _ = make_api(store)
    with TestClient(Starlette(routes=api.routes())) as c:
        first = c.post("/v1/track", headers=bearer(INGEST, **{"Idempotency-Key": "run-1"}),
                       json=EXAMPLE)  # fmt: skip
        again = c.post("/v1/track", headers=bearer(OTHER_INGEST, **{"Idempotency-Key": "run-1"}),
                       json=EXAMPLE)  # fmt: skip
        other_org = c.post("/v1/track", headers=bearer(KEYS[("globex", "ingest")],
                           **{"Idempotency-Key": "run-1"}), json=EXAMPLE)  # fmt: skip
        fresh = [c.post("/v1/track", headers=bearer(INGEST), json=EXAMPLE) for _ in range(2)]
    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert other_org.json()["event_id"] != first.json()["event_id"]
    assert fresh[0].json()["event_id"] != fresh[1].json()["event_id"]
    store.close()
    reopened = open_store(tmp_path)  # a restart: the in-memory map is gone, the store is not
    try:
        api2, _ = make_api(reopened)
        with TestClient(Starlette(routes=api2.routes())) as c:
            after = c.post("/v1/track", headers=bearer(INGEST, **{"Idempotency-Key": "run-1"}),
                           json=EXAMPLE)  # fmt: skip
        assert after.content == first.content
        n = reopened.query("SELECT count(*) FROM roi_events WHERE org = 'acme'")[0][0]
        assert n == 3
        view = reopened.query("SELECT event_id FROM idempotency_keys WHERE org = 'acme'")
        assert view == [(first.json()["event_id"],)]
    finally:
        reopened.close()


def test_concurrent_requests_with_one_key_make_one_event(store: Store) -> None:
    api, _ = make_api(store)
    app = Starlette(routes=api.routes())

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await asyncio.gather(*(
                c.post("/v1/track", json=EXAMPLE,
                       headers=bearer(INGEST if i % 2 else OTHER_INGEST,
                                      **{"Idempotency-Key": "same"}))
                for i in range(20)
            ))  # fmt: skip

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    assert store.query("SELECT count(*) FROM roi_events")[0][0] == 1


def test_settings_shape_and_task_types(client: TestClient) -> None:
    assert client.get("/v1/settings", headers=bearer(INGEST)).status_code == 401
    r = client.patch("/v1/settings", headers=bearer(ADMIN), json={
        "task_type_overrides": {"ticket_triage": 6},
        "custom_task_types": {"po_approval": {"baseline_minutes": 12, "description": "PO"}},
        "fallback_baseline_minutes": 2.5, "plan": "pro"})  # fmt: skip
    assert r.status_code == 200, r.text
    got = client.get("/v1/settings", headers=bearer(ADMIN)).json()
    assert got["limits"] == {"requests_per_second": 200, "monthly_events": None}
    assert got["custom_task_types"]["po_approval"]["baseline_minutes"] == 12
    bad = client.patch("/v1/settings", headers=bearer(ADMIN), json={"currency": "eu", "x": 1})
    assert bad.status_code == 422
    assert {d["field"] for d in bad.json()["details"]} == {"currency", "x"}
    types = client.get("/v1/task-types", headers=bearer(READ)).json()["task_types"]
    by_name = {t["name"]: t for t in types}
    assert by_name["ticket_triage"]["baseline_minutes"] == 6
    assert by_name["ticket_triage"]["source"] == "override"
    assert by_name["po_approval"]["source"] == "custom" and len(types) >= 41
    stack = [
        client.post("/v1/track", headers=bearer(INGEST), json={**EXAMPLE, "task_type": t}).json()
        for t in ("ticket_triage", "po_approval", "anything_else")
    ]
    assert [s["resolved_baseline_source"] for s in stack] == ["override", "custom", "fallback"]


def test_rate_limit_and_quota(client: TestClient) -> None:
    eur(client, limits={"requests_per_second": 3, "monthly_events": 4})
    codes = [client.post("/v1/track", headers=bearer(INGEST), json=EXAMPLE) for _ in range(4)]
    assert [r.status_code for r in codes] == [201, 201, 201, 429]
    assert codes[3].json()["code"] == "rate_limited" and codes[3].headers["retry-after"] == "1"
    other = client.post("/v1/track", headers=bearer(OTHER_INGEST), json=EXAMPLE)
    assert other.status_code == 201  # per key: another key of the org is not limited
    over = client.post("/v1/track", headers=bearer(OTHER_INGEST), json=EXAMPLE)
    assert (over.status_code, over.json()["code"]) == (429, "quota_exceeded")


def test_events_reads_and_reports(client: TestClient) -> None:
    eur(client)
    now = datetime.now(UTC)
    for i, (agent, outcome) in enumerate(
        [("a1", "success"), ("a1", "failure"), ("a2", "needs_review"), ("a2", "success")]
    ):
        r = client.post(
            "/v1/track",
            headers=bearer(INGEST, traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"),
            json={
                **EXAMPLE,
                "agent_id": agent,
                "outcome": outcome,
                "agent_cost": 0.5,
                "metadata": {"team": "red" if i < 2 else "blue"},
                "occurred_at": (now - timedelta(hours=i)).isoformat(),
            },
        )
        assert r.status_code == 201, r.text
    page = client.get("/v1/events?limit=3", headers=bearer(READ)).json()
    assert len(page["events"]) == 3 and page["next_cursor"]
    rest = client.get(f"/v1/events?limit=3&cursor={page['next_cursor']}", headers=bearer(READ))
    ids = [e["event_id"] for e in page["events"] + rest.json()["events"]]
    assert len(set(ids)) == 4
    one = client.get(f"/v1/events/{ids[0]}", headers=bearer(READ)).json()
    assert one["metadata"] == {"team": "red"} and one["trace_id"] == "ab" * 16
    assert client.get(f"/v1/events/{ids[0]}", headers=bearer(KEYS[("globex", "read")])
                      ).status_code == 404  # fmt: skip
    blue = client.get("/v1/events?metadata.team=blue", headers=bearer(READ)).json()["events"]
    assert {e["agent_id"] for e in blue} == {"a2"}
    rep = client.get("/v1/reports?group_by=agent_id&interval=1h", headers=bearer(READ)).json()
    t = rep["totals"]
    assert (t["events"], t["hours_saved"], t["cost_saved"], t["agent_cost"]) == (
        4,
        0.198,
        8.91,
        2.0,
    )
    assert t["net_saved"] == 6.91 and t["success_rate"] == 0.5 and rep["currencies"] == ["EUR"]
    groups = {g["group"]: g for g in rep["groups"]}
    assert groups["a1"]["net_saved"] == 1.97  # 2.97 - 0.5 + (0 - 0.5)
    assert sum(b["events"] for b in rep["series"]) == 4
    by_meta = client.get("/v1/reports?group_by=metadata.team", headers=bearer(READ)).json()
    assert {g["group"]: g["events"] for g in by_meta["groups"]} == {"red": 2, "blue": 2}
    bad = client.get("/v1/reports?group_by=metadata.x';--", headers=bearer(READ))
    assert bad.status_code == 422
    assert json.loads(client.get("/v1/reports", headers=bearer(INGEST)).text)["code"] == (
        "invalid_api_key"
    )


@pytest.mark.parametrize("limit", [1, 2])
def test_event_pages_with_shared_times_list_each_event_once(client: TestClient, limit: int) -> None:
    # Issue 20: the cursor broke ties on the agent id, so events sharing occurred_at (and an
    # agent) repeated forever. It breaks them on the event id now.
    at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for agent in ("a", "a", "b", "a", "b"):
        body = {**EXAMPLE, "agent_id": agent, "occurred_at": at}
        assert client.post("/v1/track", headers=bearer(INGEST), json=body).status_code == 201
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/events", headers=bearer(READ), params=params).json()
        seen += [e["event_id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and len(set(seen)) == 5


def test_a_printed_time_given_back_selects_its_event(client: TestClient) -> None:
    # Issue 20: times print to the millisecond but are stored to the microsecond.
    at = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=123456).isoformat()
    r = client.post("/v1/track", headers=bearer(INGEST), json={**EXAMPLE, "occurred_at": at})
    printed = r.json()["occurred_at"]
    assert printed.endswith(".123Z")
    page = client.get("/v1/events", headers=bearer(READ), params={"from": printed, "to": printed})
    assert [e["occurred_at"] for e in page.json()["events"]] == [printed]


def test_unknown_track_fields_are_ignored_and_known_ones_still_checked(client: TestClient) -> None:
    r = client.post("/v1/track", headers=bearer(INGEST), json={**EXAMPLE, "sdk_version": "9"})
    assert r.status_code == 201, r.text
    r = client.post("/v1/track", headers=bearer(INGEST), json={**EXAMPLE, "agent_cost": "x"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "agent_cost"
    huge = b'{"agent_id": "a", "task_type": "email_classification", "outcome": "success", '
    huge += b'"agent_cost": 1' + b"0" * 400 + b"}"
    r = client.post("/v1/track", headers=bearer(INGEST, **{"Content-Type": "application/json"}),
                    content=huge)  # fmt: skip
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "agent_cost"


def test_nul_in_event_filters_is_a_422(client: TestClient) -> None:
    for name in ("agent_id", "task_type", "model", "trace_id", "run_id"):
        for path in ("/v1/events", "/v1/reports"):
            r = client.get(path, headers=bearer(READ), params={name: "a\x00b"})
            assert r.status_code == 422, (path, name, r.text)
            assert r.json()["details"][0]["field"] == name
