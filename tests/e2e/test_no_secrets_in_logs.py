"""Secrets never reach the logs: debug-level JSON logs of a server that saw good and bad keys."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.e2e.server import KEYS, make_server
from tests.otlp_factory import request_of


def test_debug_logs_hold_no_key_secret(tmp_path: Path) -> None:
    server = make_server(
        tmp_path, extra="service:\n  telemetry:\n    logs: {level: debug, format: json}\n"
    ).start()
    body = request_of(16, seed=3).SerializeToString()
    wrong_secret = "al_live_aaaa0001_" + "f" * 40  # a known id with a wrong secret
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for key in (KEYS[("acme", "ingest")], KEYS[("acme", "read")], wrong_secret, "garbage"):
            http.post(
                "/v1/traces",
                content=body,
                headers={
                    "authorization": f"Bearer {key}",
                    "content-type": "application/x-protobuf",
                },
            )
        minted = http.post(
            "/api/keys",
            json={"scope": "read", "name": "grafana"},
            headers={"authorization": f"Bearer {KEYS[('acme', 'admin')]}"},
        ).json()["key"]
        http.get("/api/keys", headers={"authorization": f"Bearer {minted}"})
    assert server.stop() == 0
    output = "".join(server.output)
    secrets = [k.rsplit("_", 1)[1] for k in (*KEYS.values(), wrong_secret, minted)]
    assert not [s for s in secrets if s in output]
    # The logs really were JSON at debug level (so the check above read something real).
    records = [json.loads(line) for line in server.output if line.startswith("{")]
    assert records and {r["level"] for r in records} >= {"info"}
