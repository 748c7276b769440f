"""OTLP/HTTP end to end, down to the store: every signal in protobuf and JSON, gzip or not,
re-sends and partial batches, sent by plain HTTP (httpx) to the real server, then read back.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.e2e.otlp import (
    JSON,
    PROTOBUF,
    logs_request,
    metrics_request,
    otlp_json,
    span_id,
    spans_request,
    trace_id,
)
from tests.e2e.server import KEYS, make_server
from tests.e2e.test_otlp_http import headers


def test_every_signal_and_encoding_is_stored(tmp_path: Path) -> None:
    server = make_server(tmp_path).start()
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        sent = {
            "pb": spans_request("pb", 3, seed=1),
            "json": spans_request("json", 3, seed=2),
            "pb-gzip": spans_request("pb-gzip", 3, seed=3),
            "json-gzip": spans_request("json-gzip", 3, seed=4),
        }
        for service, req in sent.items():
            body = otlp_json(req) if "json" in service else req.SerializeToString()
            media = JSON if "json" in service else PROTOBUF
            extra = {}
            if service.endswith("gzip"):
                body, extra = gzip.compress(body), {"content_encoding": "gzip"}
            r = c.post("/v1/traces", content=body, headers=headers(media, **extra))
            assert r.status_code == 200, r.text
            # The answer is in the request's encoding; no partial success when nothing failed.
            assert r.headers["content-type"].split(";")[0] == media
            if media == JSON:
                assert r.json() == {}
            else:
                assert ExportTraceServiceResponse.FromString(r.content) == (
                    ExportTraceServiceResponse()
                )

        # The same span re-sent three times (protobuf, JSON, gzip) is stored once.
        again = spans_request("retry", 1, seed=5)
        bodies = [
            (again.SerializeToString(), headers()),
            (otlp_json(again), headers(JSON)),
            (gzip.compress(again.SerializeToString()), headers(content_encoding="gzip")),
        ]
        for body, h in bodies:
            assert c.post("/v1/traces", content=body, headers=h).status_code == 200

        # Partial success: two spans without a valid trace id are refused, the rest stored.
        partial = spans_request("partial", 2, seed=6, bad=2)
        r = c.post("/v1/traces", content=partial.SerializeToString(), headers=headers())
        assert r.status_code == 200
        resp = ExportTraceServiceResponse.FromString(r.content)
        assert resp.partial_success.rejected_spans == 2
        assert resp.partial_success.error_message
        r = c.post("/v1/traces", content=otlp_json(partial), headers=headers(JSON))
        assert r.status_code == 200
        assert int(r.json()["partialSuccess"]["rejectedSpans"]) == 2

        # Another org's key stores into that org.
        globex = spans_request("globex", 2, seed=7)
        r = c.post(
            "/v1/traces",
            content=globex.SerializeToString(),
            headers=headers(key=KEYS[("globex", "ingest")]),
        )
        assert r.status_code == 200

        # Logs and metrics, each in both encodings.
        for path, make in (("/v1/logs", logs_request), ("/v1/metrics", metrics_request)):
            for media in (PROTOBUF, JSON):
                msg = make(f"{path[4:]}-{media.split('/')[1]}")
                body = otlp_json(msg) if media == JSON else msg.SerializeToString()
                r = c.post(path, content=body, headers=headers(media))
                assert r.status_code == 200, r.text
                assert r.headers["content-type"].split(";")[0] == media
        r = c.post(
            "/v1/logs",
            content=gzip.compress(logs_request("logs-gzip").SerializeToString()),
            headers=headers(content_encoding="gzip"),
        )
        assert r.status_code == 200
        assert ExportLogsServiceResponse.FromString(r.content) == ExportLogsServiceResponse()

    assert server.stop() == 0
    rows = server.query(
        "SELECT org, service_name, count(*), count(DISTINCT span_id) FROM spans "
        "GROUP BY ALL ORDER BY ALL"
    )
    assert rows == [
        ("acme", "json", 3, 3),
        ("acme", "json-gzip", 3, 3),
        ("acme", "partial", 2, 2),
        ("acme", "pb", 3, 3),
        ("acme", "pb-gzip", 3, 3),
        ("acme", "retry", 1, 1),
        ("globex", "globex", 2, 2),
    ]
    # JSON hex ids are stored as the same ids protobuf bytes give.
    ids = server.query(
        "SELECT trace_id, span_id, name, kind, start_time_unix_nano, attributes->>'i' "
        "FROM spans WHERE service_name = 'json' ORDER BY span_id"
    )
    assert ids == [
        (
            trace_id(2).hex(),
            span_id(2, i).hex(),
            f"json span {i}",
            1,
            1_700_000_000_000_000_000 + i,
            str(i),
        )
        for i in range(3)
    ]
    assert server.query("SELECT count(*) FROM spans WHERE trace_id = repeat('0', 32)") == [(0,)]
    logs = server.query("SELECT service_name, body->>'$', severity_number FROM logs ORDER BY ALL")
    assert logs == [
        (svc, f"{svc} log {i}", 9)
        for svc in ("logs-gzip", "logs-json", "logs-x-protobuf")
        for i in range(2)
    ]
    points = server.query(
        "SELECT service_name, metric_name, metric_type, value, is_monotonic FROM metrics "
        "ORDER BY ALL"
    )
    assert points == [
        (svc, "gen_ai.client.token.usage", "sum", v, True)
        for svc in ("metrics-json", "metrics-x-protobuf")
        for v in (42.0, 43.0)
    ]
