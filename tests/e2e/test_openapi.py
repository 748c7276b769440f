"""The OpenAPI contract at /openapi.json, fuzzed with Schemathesis against a real server: every
operation gets a bounded number of generated requests (with a key it accepts); none may answer
5xx, every response must match the document, and the server must be healthy afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks

from tests.e2e.server import KEYS, Server, make_server

# CI-sized: about 30 operations x this many examples takes a minute or two on 2 cores.
EXAMPLES = int(os.environ.get("AGENTLEDGER_FUZZ_EXAMPLES", "12"))
SCOPES = ("read", "ingest", "admin")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = make_server(Path(tmp_path_factory.mktemp("openapi"))).start()
    try:
        yield s
    finally:
        s.stop()


def _key_for(operation: dict[str, Any]) -> str | None:
    accepted = [s for s in operation.get("x-accepted", []) if s in SCOPES]
    return KEYS[("acme", accepted[0])] if accepted else None


def test_the_document_lists_every_json_api(server: Server) -> None:
    doc = httpx.get(f"{server.base_url}/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    paths = doc["paths"]
    for path, method in [
        ("/v1/track", "post"),
        ("/api/v1/capture-event", "post"),
        ("/api/logs", "post"),
        ("/api/runs", "get"),
        ("/api/keys", "post"),
        ("/api/alert-rules", "get"),
        ("/api/retention", "patch"),
        ("/api/mcp/sessions", "get"),
    ]:
        assert method in paths[path], (path, method)
    assert {t["name"] for t in doc["tags"]} == {"read", "mcp", "roi", "evals", "admin"}


@pytest.mark.slow
def test_every_operation_survives_generated_requests(server: Server) -> None:
    doc = httpx.get(f"{server.base_url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []
    count = 0
    for result in schema.get_all_operations():
        op = result.ok()
        raw = doc["paths"][op.path][op.method.lower()]
        key = _key_for(raw)
        headers = {"Authorization": f"Bearer {key}"} if key else {}

        count += 1
        try:
            _fuzz(op, server.base_url, headers)()
        except (Exception, ExceptionGroup) as e:
            failures.append(f"{op.label}: {e}")
    assert count >= 40
    assert failures == []
    health = httpx.get(f"{server.base_url}/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    r = httpx.get(
        f"{server.base_url}/api/runs", headers={"Authorization": f"Bearer {KEYS[('acme', 'read')]}"}
    )
    assert r.status_code == 200


def _fuzz(op: Any, base_url: str, headers: dict[str, str]) -> Any:
    """A Hypothesis test of one operation: `EXAMPLES` generated requests, the same every run."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests every run: a failure is reproducible
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy())
    def fuzz(case: Any) -> None:
        case.call_and_validate(
            base_url=base_url,
            headers=headers,
            timeout=30,
            # A schema-valid body may still be refused on its meaning (an unknown task type,
            # a project that does not exist): a 4xx there is right, not a failure.
            excluded_checks=[checks.positive_data_acceptance],
        )

    return fuzz
