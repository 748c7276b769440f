"""A server started on a config written the OpenTelemetry Collector's way: a health_check
extension on its own port, /metrics on the telemetry address (read with prometheus_client's
parser), CORS preflights for browser SDKs, memory_limiter and batch, and a key read from a file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.otlp import PROTOBUF, spans_request
from tests.e2e.server import Server, make_server
from tests.promtext import has, metric

FILE_KEY = "al_live_f11e0001_" + "7" * 40


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("collector-config")
    secret = tmp / "ingest_key"
    secret.write_text(FILE_KEY + "\n")
    extra = """extensions:
  health_check:
    endpoint: 127.0.0.1:0
  pprof:
    endpoint: localhost:1777
  zpages: {}
processors:
  memory_limiter: {check_interval: 1s, limit_mib: 512, spike_limit_mib: 128}
  batch: {timeout: 50ms, send_batch_size: 1024}
  normalise: {}
  cost: {}
service:
  extensions: [health_check, pprof, zpages]
  telemetry:
    metrics: {level: detailed, address: "127.0.0.1:0"}
  pipelines:
    traces: {receivers: [otlp], processors: [memory_limiter, batch, normalise, cost], exporters: [store]}
"""  # noqa: E501
    cors = (
        'cors: {allowed_origins: ["https://app.example.com", "https://*.example.org"], '
        "allowed_headers: [Authorization], max_age: 600}"
    )
    s = make_server(tmp, extra, http=cors)
    # An org whose ingest key is a secret file, as a container secret would be.
    text = s.config_path.read_text()
    text = text.replace(
        "  orgs:\n",
        f'  orgs:\n    - {{name: filed, keys: [{{scope: ingest, key: "${{file:{secret}}}"}}]}}\n',
    )
    s.config_path.write_text(text)
    s.start()
    yield s
    s.stop()


def listener(server: Server, name: str) -> str:
    """The address the banner printed for a listener (the metrics one, an extension)."""
    for line in server.output:
        m = re.match(rf"  {re.escape(name)}\s+(http://\S+)", line)
        if m:
            return m.group(1)
    raise AssertionError(f"no {name} listener in the banner:\n{''.join(server.output)}")


def test_the_health_check_extension_answers_on_its_own_port(server: Server) -> None:
    base = listener(server, "health_check")
    for path in ("/", "/health"):
        r = httpx.get(base + path, timeout=10)
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
    assert "extension 'pprof' does nothing in agentledger" in "".join(server.output)


def test_metrics_are_served_on_the_telemetry_address_only(server: Server) -> None:
    page = httpx.get(listener(server, "metrics") + "/metrics", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert has(page.text, "process_resident_memory_bytes")
    assert has(page.text, "agentledger_store_commits_total")
    assert metric(page.text, "agentledger_queue_items") >= 0
    assert httpx.get(server.base_url + "/metrics", timeout=10).status_code == 404


def test_cors_preflights_from_allowed_and_refused_origins(server: Server) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            server.base_url + "/v1/traces",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
            timeout=10,
        )

    for origin in ("https://app.example.com", "https://shop.example.org"):
        r = preflight(origin)
        assert r.status_code == 200, (origin, r.text)
        assert r.headers["access-control-allow-origin"] == origin
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        assert r.headers["access-control-max-age"] == "600"
    refused = preflight("https://evil.example.net")
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    # The real request from an allowed origin carries the header the browser needs.
    body = spans_request("cors", 1, seed=77).SerializeToString()
    r = httpx.post(
        server.base_url + "/v1/traces",
        content=body,
        headers={
            "Origin": "https://app.example.com",
            "Content-Type": PROTOBUF,
            "Authorization": f"Bearer {FILE_KEY}",
        },
        timeout=30,
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"


def test_a_key_read_from_a_file_authenticates(server: Server) -> None:
    body = spans_request("filed", 2, seed=78).SerializeToString()
    r = httpx.post(
        server.base_url + "/v1/traces",
        content=body,
        headers={"Content-Type": PROTOBUF, "Authorization": f"Bearer {FILE_KEY}"},
        timeout=30,
    )
    assert r.status_code == 200
