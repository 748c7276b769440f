"""A separate `api:` listener: OTLP stays on the OTLP/HTTP port, the JSON APIs move to it."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.server import KEYS, make_server
from tests.otlp_factory import request_of


def test_split_listeners_serve_what_they_should(tmp_path: Path) -> None:
    server = make_server(tmp_path, extra='api: {endpoint: "127.0.0.1:0"}\n').start()
    try:
        assert server.api != server.http
        admin = {"authorization": f"Bearer {KEYS[('acme', 'admin')]}"}
        ingest = {
            "authorization": f"Bearer {KEYS[('acme', 'ingest')]}",
            "content-type": "application/x-protobuf",
        }
        body = request_of(8, seed=5).SerializeToString()
        with httpx.Client(timeout=30) as http:
            assert http.get(f"{server.api_url}/api/keys", headers=admin).status_code == 200
            assert http.get(f"{server.base_url}/api/keys", headers=admin).status_code == 404
            assert (
                http.post(f"{server.base_url}/v1/traces", content=body, headers=ingest).status_code
                == 200
            )
            assert http.post(
                f"{server.api_url}/v1/traces", content=body, headers=ingest
            ).status_code in (
                404,
                405,
            )
            for url in (server.base_url, server.api_url):
                assert http.get(f"{url}/health").json() == {"status": "ok"}
    finally:
        assert server.stop() == 0
