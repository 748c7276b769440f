"""OTLP/HTTP end to end, by plain HTTP (httpx) against the real server in a subprocess: one
shared server with a 1 MiB body limit for every error path, `/health` and `/metrics`.

What reaches the store is in `test_otlp_http_store.py`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import httpx
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2

from tests.e2e.otlp import (
    JSON,
    PROTOBUF,
    rss_kib,
    spans_request,
)
from tests.e2e.server import KEYS, Server, make_server
from tests.promtext import metric

INGEST = KEYS[("acme", "ingest")]
MIB = 1024 * 1024


def headers(content_type: str = PROTOBUF, key: str | None = INGEST, **more: str) -> dict[str, str]:
    h = {"content-type": content_type, **{k.replace("_", "-"): v for k, v in more.items()}}
    if key is not None:
        h["authorization"] = f"Bearer {key}"
    return h


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = make_server(tmp_path_factory.mktemp("http"), http="max_request_body_size_mib: 1").start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            assert s.stop() == 0


@pytest.fixture
def client(shared: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared.base_url, timeout=30) as c:
        yield c


def rpc_status(response: httpx.Response) -> status_pb2.Status:
    """The google.rpc.Status of an error answer, in the encoding its Content-Type says."""
    status = status_pb2.Status()
    media = response.headers["content-type"].split(";")[0]
    if media == JSON:
        json_format.Parse(response.text, status)
    else:
        assert media == PROTOBUF, media
        status.ParseFromString(response.content)
    return status


# -- error paths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("media", "body", "encoding"),
    [
        (PROTOBUF, b"\x0a\x05\x0a\x03\x0a\x01", "identity"),
        (PROTOBUF, b"\xff\xff\xff\xff", "identity"),
        (JSON, b"{not json", "identity"),
        (
            JSON,
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}',
            "identity",
        ),
        (JSON, b"[1, 2]", "identity"),
        (JSON, b"[" * 50_000, "identity"),
        (PROTOBUF, b"this is not gzip", "gzip"),
        (JSON, gzip.compress(b"{broken"), "gzip"),
        # A gzip stream cut short: its prefix is a valid request, the checksum is missing.
        (PROTOBUF, gzip.compress(spans_request("cut", 3).SerializeToString())[:-8], "gzip"),
        (PROTOBUF, gzip.compress(spans_request("tail", 3).SerializeToString()) + b"junk", "gzip"),
    ],
)
def test_malformed_bodies_are_400_in_the_request_encoding(
    client: httpx.Client, media: str, body: bytes, encoding: str
) -> None:
    r = client.post("/v1/traces", content=body, headers=headers(media, content_encoding=encoding))
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].split(";")[0] == media
    status = rpc_status(r)
    assert status.code == 3  # INVALID_ARGUMENT
    assert status.message


def test_malformed_logs_and_metrics_are_400(client: httpx.Client) -> None:
    for path in ("/v1/logs", "/v1/metrics"):
        r = client.post(path, content=b"\x0a\x05\x0a", headers=headers())
        assert r.status_code == 400
        r = client.post(
            path, content=b'{"resourceLogs": 7, "resourceMetrics": 7}', headers=headers(JSON)
        )
        assert r.status_code == 400 and rpc_status(r).code == 3


def _revoked_ingest_key(client: httpx.Client) -> str:
    admin = {"authorization": f"Bearer {KEYS[('acme', 'admin')]}"}
    created = client.post("/api/keys", json={"scope": "ingest", "name": "to revoke"}, headers=admin)
    assert created.status_code == 201
    key = created.json()["key"]
    ok = client.post("/v1/traces", content=b"", headers=headers(key=key))
    assert ok.status_code == 200  # valid before the revocation
    assert client.delete(f"/api/keys/{created.json()['id']}", headers=admin).status_code == 200
    return key


@pytest.mark.parametrize("media", [PROTOBUF, JSON])
def test_authentication_failures_are_401(client: httpx.Client, media: str) -> None:
    body = spans_request("auth", 1, seed=40).SerializeToString() if media == PROTOBUF else b"{}"
    cases = {
        "missing_authorization": headers(media, key=None),
        "invalid_api_key": headers(media, key="not-a-key"),
    }
    for code, h in cases.items():
        r = client.post("/v1/traces", content=body, headers=h)
        assert r.status_code == 401
        assert r.headers["content-type"].split(";")[0] == media
        status = rpc_status(r)
        assert status.code == 16 and status.message.startswith(code), status  # UNAUTHENTICATED
    for key in (
        "al_live_cccc0001_" + "1" * 40,  # unknown id
        "al_live_aaaa0001_" + "9" * 40,  # known id, wrong secret
        KEYS[("acme", "read")],
        KEYS[("acme", "admin")],
        KEYS[("globex", "read")],
    ):
        r = client.post("/v1/traces", content=body, headers=headers(media, key=key))
        assert r.status_code == 401, key
        assert rpc_status(r).message.startswith("invalid_api_key")
    r = client.post(
        "/v1/traces",
        content=body,
        headers={"authorization": f"Basic {INGEST}", "content-type": media},
    )
    assert r.status_code == 401
    revoked = _revoked_ingest_key(client)
    r = client.post("/v1/logs", content=b"", headers=headers(media, key=revoked))
    assert r.status_code == 401
    assert rpc_status(r).message.startswith("key_revoked")


def test_oversized_bodies_are_413(client: httpx.Client) -> None:
    big = spans_request("big", 1).SerializeToString() + b"\x00" * (MIB + 1)  # never parsed
    r = client.post("/v1/traces", content=big, headers=headers())
    assert r.status_code == 413
    assert rpc_status(r).code == 8  # RESOURCE_EXHAUSTED
    r = client.post("/v1/logs", content=b"{" + b" " * (MIB + 10) + b"}", headers=headers(JSON))
    assert r.status_code == 413
    assert r.headers["content-type"].split(";")[0] == JSON

    # Streamed without a Content-Length: the limit is enforced while reading.
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"\x00" * (128 * 1024)

    r = client.post("/v1/traces", content=chunks(), headers=headers())
    assert r.status_code == 413

    # Exactly at the limit (after decompression) is fine.
    at_limit = b" " * (MIB - 2)
    r = client.post(
        "/v1/traces",
        content=gzip.compress(b"{" + at_limit + b"}"),
        headers=headers(JSON, content_encoding="gzip"),
    )
    assert r.status_code == 200, r.text


def test_a_gzip_bomb_is_refused_without_inflating_it(shared: Server, client: httpx.Client) -> None:
    bomb = gzip.compress(b"\x00" * (70 * MIB), compresslevel=9)
    assert len(bomb) < 200 * 1024
    assert shared.proc is not None
    before = rss_kib(shared.proc.pid)
    for _ in range(3):
        r = client.post("/v1/traces", content=bomb, headers=headers(content_encoding="gzip"))
        assert r.status_code == 413
        assert "decompressed" in rpc_status(r).message
    grown = rss_kib(shared.proc.pid) - before
    assert grown < 30 * 1024, f"RSS grew by {grown} KiB"


def test_unsupported_content_types_and_encodings_are_415(client: httpx.Client) -> None:
    body = spans_request("ct", 1).SerializeToString()
    for media in ("text/plain", "application/octet-stream", "application/xml", ""):
        h = headers(media)
        if not media:
            del h["content-type"]
        r = client.post("/v1/traces", content=body, headers=h)
        assert r.status_code == 415, media
        assert rpc_status(r).code == 3
    r = client.post("/v1/metrics", content=body, headers=headers(content_encoding="br"))
    assert r.status_code == 415
    # Parameters and case do not matter.
    r = client.post("/v1/traces", content=b"{}", headers=headers("Application/JSON; charset=utf-8"))
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == JSON


def test_other_methods_and_paths(client: httpx.Client) -> None:
    assert client.get("/v1/traces").status_code == 405
    assert client.post("/v1/spans", content=b"", headers=headers()).status_code == 404


def test_health(client: httpx.Client) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_metrics_counters_move(client: httpx.Client) -> None:
    def scrape() -> str:
        r = client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        return r.text

    before = scrape()
    labels = {"transport": "http", "signal": "traces"}
    req = spans_request("metrics", 4, seed=50, bad=1)
    for _ in range(2):  # the second time, all four are duplicates
        r = client.post("/v1/traces", content=req.SerializeToString(), headers=headers())
        assert r.status_code == 200
    after = scrape()

    def moved(name: str, **lab: str) -> float:
        return metric(after, name, **lab) - metric(before, name, **lab)

    assert moved("agentledger_items_received_total", **labels) == 10
    assert moved("agentledger_items_accepted_total", **labels) == 4
    assert moved("agentledger_items_deduplicated_total", **labels) == 4
    assert moved("agentledger_items_rejected_total", **labels) == 2
    assert moved("agentledger_store_commits_total") >= 2
    assert moved("agentledger_commit_duration_seconds_count") >= 2
    assert metric(after, "agentledger_store_size_bytes") > 0
    assert "# TYPE agentledger_queue_items gauge" in after
    assert metric(after, "agentledger_queue_items") == 0
    assert "# TYPE agentledger_commit_duration_seconds histogram" in after
    assert 'agentledger_commit_duration_seconds_bucket{le="+Inf"}' in after
    # No key material ever appears in the metrics.
    assert INGEST not in after and INGEST.split("_")[3] not in after


def test_json_response_carries_partial_success(client: httpx.Client) -> None:
    body = json.dumps(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {"traceId": "00" * 16, "spanId": "01" * 8, "name": "zero trace"},
                                {"traceId": "ab" * 16, "spanId": "00" * 8, "name": "zero span"},
                                {"traceId": "ab" * 8, "spanId": "01" * 8, "name": "short trace"},
                                {"traceId": "ab" * 16, "spanId": "01" * 4, "name": "short span"},
                                {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "good"},
                            ]
                        }
                    ]
                }
            ]
        }
    ).encode()
    r = client.post("/v1/traces", content=body, headers=headers(JSON))
    assert r.status_code == 200
    partial = r.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 4
    assert "trace_id" in partial["errorMessage"]
