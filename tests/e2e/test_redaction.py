"""Redaction end to end: secrets sent over OTLP, /v1/track and capture-event never reach disk.

A real server with a `redact:` processor gets spans, log records, an ROI audit sample and an MCP
call carrying secrets; after the commit and a clean stop, every file under the data directory
is read raw and decoded (Parquet rows, every table of the catalog database) and searched.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.parquet as pq
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.e2e.otlp import PROTOBUF, spans_request
from tests.e2e.server import KEYS, make_server
from tests.otlp_factory import kv
from tests.promtext import metric

INGEST = KEYS[("acme", "ingest")]
HASH_KEY = "e2e-hash-key-0123456789abcdef"
OPENAI = "sk-" + "proj-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe" + "T3BlbkFJ" + "q" * 20
SECRETS = {
    "email": "alice.secret@example.com",
    "card": "4111 1111 1111 1111",
    "api_key": OPENAI,
    "aws": "AKIA" + "Z7Q2W3E4R5T6Y7U8",
    "iban": "DE89 3704 0044 0532 0130 00",
    "phone": "+1 415 555 2671",
    "password": "hunter2-is-my-password",
    "customer": "CUST-483920",
}
REDACT = f"""
processors:
  redact:
    hash_key: "{HASH_KEY}"
    blocked_keys: ["*password*"]
    rules:
      - {{name: customer_id, pattern: "CUST-[0-9]{{6}}", action: hash}}
  normalise: {{}}
  cost: {{}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [redact, normalise, cost], exporters: [store]}}
    logs: {{receivers: [otlp], processors: [redact], exporters: [store]}}
"""


def _spans(marker: str) -> bytes:
    req = spans_request("support-agent", n=3, seed=77)
    rs = req.resource_spans[0]
    rs.resource.attributes.append(kv("owner.email", SECRETS["email"]))
    spans = rs.scope_spans[0].spans
    spans[0].attributes.extend(
        [
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.request.model", "gpt-4o"),
            kv("gen_ai.prompt", f"card {SECRETS['card']} key {SECRETS['api_key']}"),
            kv("db.password", SECRETS["password"]),
            kv("control", marker),
        ]
    )
    spans[1].status.message = f"failed for {SECRETS['iban']}"
    spans[1].name = f"call {SECRETS['phone']}"
    event = spans[2].events.add(name="gen_ai.user.message", time_unix_nano=1)
    event.attributes.append(kv("content", f"customer {SECRETS['customer']} aws {SECRETS['aws']}"))
    return req.SerializeToString()


def _logs() -> bytes:
    req = ExportLogsServiceRequest()
    rec = req.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=5)
    rec.body.string_value = f"user {SECRETS['email']} paid with {SECRETS['card']}"
    return req.SerializeToString()


def _post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, timeout=30.0, **kwargs)


def _decoded_text(data_dir: Path) -> str:
    """Every value of every Parquet file and of every table of the catalog database, as text."""
    parts = []
    for path in sorted(data_dir.rglob("*.parquet")):
        parts.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
    con = duckdb.connect()
    con.execute(f"ATTACH '{data_dir / 'catalog.ducklake'}' AS cat (READ_ONLY)")
    tables = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_catalog = 'cat'"
    ).fetchall()
    for schema, table in tables:
        rows = con.execute(f'SELECT * FROM cat."{schema}"."{table}"').fetchall()
        parts.append(json.dumps(rows, default=str))
    con.close()
    return "\n".join(parts)


def test_secrets_are_nowhere_in_the_store(tmp_path: Path) -> None:
    marker = f"control-{uuid.uuid4().hex}"
    server = make_server(tmp_path, REDACT).start()
    try:
        auth = {"Authorization": f"Bearer {INGEST}", "Content-Type": PROTOBUF}
        base = server.base_url
        assert _post(f"{base}/v1/traces", content=_spans(marker), headers=auth).is_success
        assert _post(f"{base}/v1/logs", content=_logs(), headers=auth).is_success
        track = {
            "agent_id": "support-classifier",
            "task_type": "email_classification",
            "outcome": "success",
            "audit_sample": {
                "input_excerpt": f"From {SECRETS['email']}: my card is {SECRETS['card']}",
                "output_excerpt": f"Refund to {SECRETS['iban']}",
            },
            "metadata": {"customer": SECRETS["customer"]},
        }
        r = _post(
            f"{server.api_url}/v1/track", json=track, headers={"Authorization": f"Bearer {INGEST}"}
        )
        assert r.status_code == 201, r.text
        capture = {
            "session_id": "s-1",
            "primitive_name": "send_email",
            "primitive_type": "tool",
            "success": True,
            "latency": 12,
            "args": json.dumps(
                {"to": SECRETS["email"], "key": SECRETS["api_key"], "password": SECRETS["password"]}
            ),
            "result": json.dumps({"phone": SECRETS["phone"]}),
        }
        r = _post(
            f"{server.api_url}/api/v1/capture-event", json=capture, headers={"X-Org-Id": INGEST}
        )
        assert r.status_code == 200, r.text
        metrics = httpx.get(f"{base}/metrics", timeout=30.0).text
        for rule in ("email", "card", "api_key", "iban", "phone", "blocked_keys", "customer_id"):
            assert metric(metrics, "agentledger_redactions_total", rule=rule) >= 1, rule
        assert SECRETS["email"] not in metrics
    finally:
        assert server.stop() == 0

    files = [p for p in server.data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) or files
    for path in files:
        raw = path.read_bytes()
        for name, secret in SECRETS.items():
            assert secret.encode() not in raw, f"{name} in {path}"
    decoded = _decoded_text(server.data_dir)
    assert marker in decoded  # the scan does see stored values
    assert "[REDACTED:email]" in decoded and "hmac:" in decoded
    for name, secret in SECRETS.items():
        assert secret not in decoded, name
    stored = server.query("SELECT input_text FROM spans WHERE input_text IS NOT NULL")
    assert any("[REDACTED:card]" in row[0] and "[REDACTED:api_key]" in row[0] for row in stored)
