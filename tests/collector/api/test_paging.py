"""Paging through every list route whose rows can share a timestamp: `/v1/events`, `/api/runs`,
`/api/logs`, `/api/alert-events` and `/api/mcp/sessions`, with `limit` 1 and 2, sees each row
exactly once and ends (keyset cursors break ties on a unique id; the logs API's pages on a
unique order).

The APIs as the service builds them, over a real store in a temp dir, through Starlette's client;
rows are written through the APIs where they can be, then given one shared timestamp.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

with warnings.catch_warnings():
    # Starlette asks for the `httpx2` fork; `httpx` is what the test extras install and works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from collector.alerts import store as alerts_store
from collector.api.routes import routes
from collector.auth.keys import Authenticator
from collector.evals.api import EvalsApi
from collector.evals.config import EvalsConfig
from collector.mcp.api import McpApi
from collector.mcp.config import McpConfig
from collector.mcp.read_api import McpReadApi
from collector.outbound.config import OutboundPolicy
from collector.outbound.outbox import Outbox
from collector.read.api import ReadApi
from collector.roi.api import RoiApi
from collector.roi.tasktypes import load_catalogue
from collector.secretbox import SecretBox
from collector.store.lake import LAKE
from collector.store.writer import Store
from processors.output_rules.engine import RuleEngine
from tests.collector.store.test_query import insert, run_row
from tests.stores import service_store

KEYS = {
    "ingest": "al_live_aaaa0001_" + "1" * 40,
    "read": "al_read_aaaa0002_" + "2" * 40,
    "admin": "al_admin_aaaa0003_" + "3" * 40,
}
ROWS = 5
# One instant every row shares: recent enough for every route's default window, whole
# milliseconds so that the time the API prints is the time stored.
SHARED = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)


@dataclass
class Apis:
    client: TestClient
    store: Store

    def get(self, path: str, scope: str = "read", **params: Any) -> dict[str, Any]:
        r = self.client.get(path, params=params, headers={"Authorization": f"Bearer {KEYS[scope]}"})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def post(self, path: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        auth = {"Authorization": f"Bearer {KEYS['ingest']}", **headers}
        r = self.client.post(path, json=body, headers=auth)
        assert r.status_code in (200, 201), r.text
        answer: dict[str, Any] = r.json()
        return answer


@pytest.fixture(scope="module")
def apis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apis]:
    tmp_path: Path = tmp_path_factory.mktemp("paging")
    with service_store(tmp_path) as store:
        auth = Authenticator(store)
        auth.load()
        for scope, key in KEYS.items():
            auth.declare("acme", scope, key)  # type: ignore[arg-type]
        roi = RoiApi(store, auth, load_catalogue())
        roi.create_tables()
        outbox = Outbox(store)  # logs queue nothing here (no callbacks); nothing delivers
        outbox.create_tables()
        logs = EvalsApi(
            store,
            auth,
            RuleEngine(),
            config=EvalsConfig(),
            box=SecretBox.open(tmp_path),
            policy=OutboundPolicy(),
            media_root=tmp_path / "media",
            outbox=outbox,
        )
        logs.create_tables()
        mcp = McpApi(store, auth, McpConfig())
        mcp.create_tables()
        store.call(alerts_store.create_tables)
        operations = [
            *roi.operations(),
            *logs.operations(),
            *mcp.operations(),
            *McpReadApi(store, auth).operations(),
            *ReadApi(store, auth).operations(),
        ]
        with TestClient(Starlette(routes=routes(operations))) as client:
            yield _filled(Apis(client, store))


def _filled(apis: Apis) -> Apis:
    """ROWS rows behind each route, all at SHARED."""
    store = apis.store
    for i in range(ROWS):
        apis.post(
            "/v1/track",
            {
                "agent_id": "a",
                "task_type": "email_classification",
                "outcome": "success",
                "occurred_at": SHARED.isoformat().replace("+00:00", "Z"),
            },
        )
        apis.post("/api/logs", {"project": "p", "output": f"answer {i}", "model": "m"})
        apis.post("/api/v1/capture-session", {"session_id": f"s{i}"})
    insert(store, "runs", [run_row(n, started_at=SHARED, cost_usd=0.5) for n in range(1, 6)])

    def same_times(cur: Any) -> None:
        cur.execute(f"UPDATE {LAKE}.eval_logs SET created_at = ?", [SHARED])
        cur.execute(f"UPDATE {LAKE}.mcp_sessions SET received_at = ?", [SHARED])
        for _ in range(ROWS):
            cur.execute(
                f"""INSERT INTO {LAKE}.alert_events (org, event_id, rule_id, rule_name, run_id,
                    workflow_name, status, triggered_value, threshold_value, notification_sent,
                    created_at) VALUES ('acme', ?, 'ar_1', 'r', NULL, 'w', 'open', 1, 0.5,
                    false, ?)""",
                [f"ae_{uuid.uuid4().hex}", SHARED],
            )

    store.call(same_times)
    return apis


@dataclass(frozen=True)
class Route:
    """A keyset-paged route: its path, the list in its answer, a row's id, more parameters."""

    path: str
    key: str
    id_key: str
    extra: tuple[tuple[str, str], ...] = ()


KEYSET = [
    Route("/v1/events", "events", "event_id"),
    Route("/api/runs", "runs", "id"),
    Route("/api/runs", "runs", "id", (("sort", "cost_desc"),)),
    Route("/api/runs", "runs", "id", (("sort", "duration_asc"),)),
    Route("/api/alert-events", "alert_events", "id"),
    Route("/api/mcp/sessions", "sessions", "session_id"),
]


def _rows_share_the_timestamp(apis: Apis, path: str, key: str) -> None:
    times = {
        "/v1/events": "occurred_at",
        "/api/runs": "started_at",
        "/api/alert-events": "created_at",
        "/api/mcp/sessions": "started_at",
    }
    rows = apis.get(path, limit=100)[key]
    assert len(rows) == ROWS
    assert len({r[times[path]] for r in rows}) == 1, rows  # the premise: one timestamp


@pytest.mark.parametrize("limit", [1, 2])
@pytest.mark.parametrize("route", KEYSET, ids=lambda r: f"{r.path}{dict(r.extra)}")
def test_keyset_pages_see_every_row_once(apis: Apis, route: Route, limit: int) -> None:
    _rows_share_the_timestamp(apis, route.path, route.key)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(3 * ROWS):
        params: dict[str, Any] = {"limit": limit, **dict(route.extra)}
        if cursor is not None:
            params["cursor"] = cursor
        body = apis.get(route.path, **params)
        page = [row[route.id_key] for row in body[route.key]]
        assert 0 < len(page) <= limit
        seen += page
        cursor = body["next_cursor"]
        if cursor is None:
            break
    else:
        raise AssertionError(f"{route.path} kept answering a next cursor: {seen}")
    assert sorted(seen) == sorted(set(seen)), seen  # none twice
    assert len(seen) == ROWS  # none missed


@pytest.mark.parametrize("limit", [1, 2])
@pytest.mark.parametrize("sort_by", ["timestamp", "model", "status"])
@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_log_pages_see_every_log_once(apis: Apis, limit: int, sort_by: str, direction: str) -> None:
    """The logs API pages by number (its doc's `page`), over an order with a unique tail."""
    first = apis.get("/api/logs", limit=100)
    assert first["total"] == ROWS
    assert len({e["timestamp"] for e in first["executions"]}) == 1, first  # one shared time
    seen: list[str] = []

    def pages(n: int) -> dict[str, Any]:
        return apis.get("/api/logs", limit=limit, page=n, sortBy=sort_by, sortDir=direction)

    n = 1
    while rows := pages(n)["executions"]:
        assert len(rows) <= limit
        seen += [row["id"] for row in rows]
        n += 1
    assert sorted(seen) == sorted(set(seen)) and len(seen) == ROWS, seen
