"""ROI against the real server: traced runs of a mapped workflow become ROI events exactly once
(also across a restart and a late span), a run's detail shows what it saved, and the price book
refreshes from a local HTTP server whose prices change, keeping the last good book on failures.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.e2e.server import KEYS, Server, make_server
from tests.otlp_factory import export_request, kv
from tests.promtext import has, metric

INGEST, READ = KEYS[("acme", "ingest")], KEYS[("acme", "read")]
TRACE, ROOT = bytes.fromhex("5e" * 16), bytes.fromhex("0a" * 8)
ROI = "roi:\n  workflows:\n    support-triage: ticket_triage\n"


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def llm_span(n: int, start: int, model: str = "gpt-4o-mini", tokens_in: int = 1000) -> Span:
    return Span(
        trace_id=TRACE, span_id=bytes([n]) * 8, parent_span_id=ROOT, name=f"chat {model}",
        kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=start + n * 10**8,
        end_time_unix_nano=start + n * 10**8 + 5 * 10**7,
        attributes=[
            kv("gen_ai.operation.name", "chat"), kv("gen_ai.provider.name", "openai"),
            kv("gen_ai.request.model", model), kv("gen_ai.usage.input_tokens", tokens_in),
            kv("gen_ai.usage.output_tokens", 100), kv("gen_ai.agent.name", "support-triage"),
        ],
    )  # fmt: skip


def root_span(start: int, seconds: int = 30) -> Span:
    return Span(
        trace_id=TRACE, span_id=ROOT, name="invoke_agent support-triage",
        kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=start,
        end_time_unix_nano=start + seconds * 10**9, status=Status(code=Status.STATUS_CODE_OK),
        attributes=[
            kv("gen_ai.operation.name", "invoke_agent"), kv("gen_ai.agent.name", "support-triage"),
        ],
    )  # fmt: skip


def post_spans(server: Server, spans: list[Span]) -> None:
    r = httpx.post(
        f"{server.base_url}/v1/traces",
        content=export_request(spans).SerializeToString(),
        headers={"content-type": "application/x-protobuf", "authorization": f"Bearer {INGEST}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def get(server: Server, path: str, **params: Any) -> Any:
    r = httpx.get(
        f"{server.base_url}{path}", params=params, headers={"Authorization": f"Bearer {READ}"}
    )
    assert r.status_code == 200, r.text
    return r.json()


def track(server: Server, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    r = httpx.post(
        f"{server.base_url}/v1/track",
        json=body,
        headers={"Authorization": f"Bearer {INGEST}", **headers},
    )
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


def traced_events(server: Server) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = get(server, "/v1/events", **{"metadata.source": "traced_run"})[
        "events"
    ]
    return events


def test_a_mapped_workflows_runs_become_roi_events_once(tmp_path: Path) -> None:
    start = time.time_ns() - 60 * 10**9
    server = make_server(tmp_path, ROI).start()
    try:
        post_spans(server, [llm_span(1, start), llm_span(2, start), root_span(start)])
        [event] = wait_for(lambda: traced_events(server), "the run's ROI event")
        run_id = TRACE.hex() + ROOT.hex()
        # gpt-4o-mini at 0.15 / 0.60 USD per million: 2 calls of 1000 in, 100 out.
        assert {k: event[k] for k in ("agent_id", "task_type", "outcome", "run_id")} == {
            "agent_id": "support-triage", "task_type": "ticket_triage", "outcome": "success",
            "run_id": run_id,
        }  # fmt: skip
        assert (event["agent_cost"], event["resolved_cost_source"]) == (0.00042, "computed")
        assert event["agent_duration_seconds"] == 30.0
        assert (event["hours_saved"], event["cost_saved"]) == (0.075, 3.75)  # 5 min - 30 s, $50
        assert event["net_saved"] == pytest.approx(3.75 - 0.00042)

        linked = track(
            server,
            {"agent_id": "caller", "task_type": "email_classification", "outcome": "success"},
            traceparent=f"00-{TRACE.hex()}-{ROOT.hex()}-01",
        )
        detail = get(server, f"/api/runs/{run_id}")
        assert detail["run"]["id"] == run_id and "combined_cost_usd" in detail
        roi = detail["roi"]
        assert sorted(e["event_id"] for e in roi["events"]) == sorted(
            [event["event_id"], linked["event_id"]]
        )
        assert roi["hours_saved"] == round(0.075 + linked["hours_saved"], 3)
        assert roi["currency"] == "USD"

        # A late span re-derives the run (a new cost): the event is replaced, not added.
        post_spans(server, [llm_span(3, start)])
        wait_for(
            lambda: [e for e in traced_events(server) if e["agent_cost"] == 0.00063],
            "the re-valued event",
        )
    finally:
        assert server.stop() == 0
    again = make_server(tmp_path, ROI).start()
    try:
        post_spans(again, [llm_span(3, start)])  # a retry after the restart: deduplicated
        time.sleep(2)
        [after] = traced_events(again)
        assert after["event_id"] == event["event_id"] and after["agent_cost"] == 0.00063
    finally:
        assert again.stop() == 0
    assert again.query("SELECT count(*) FROM roi_events WHERE key_id IS NULL") == [(1,)]


class Upstream:
    """A fake OpenRouter `/api/v1/models` whose gpt-4o-mini input price the test changes."""

    def __init__(self) -> None:
        self.status = 200
        self.prompt = "0.000007"  # 7 USD per million input tokens
        self.hits = 0

    def body(self) -> bytes:
        pricing = {"prompt": self.prompt, "completion": "0.000001"}
        return json.dumps({"data": [{"id": "openai/gpt-4o-mini", "pricing": pricing}]}).encode()


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    state = Upstream()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits += 1
            body = state.body() if state.status == 200 else b'{"error": "down"}'
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{httpd.server_address[1]}/api/v1/models?key=s3cret"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def refreshes(server: Server, result: str) -> int:
    text = httpx.get(f"{server.base_url}/metrics").text
    return int(metric(text, "agentledger_price_book_refreshes_total", result=result))


def priced(server: Server) -> float:
    body = {
        "agent_id": "pricer", "task_type": "email_classification", "outcome": "success",
        "model": "gpt-4o-mini", "tokens_in": 1_000_000, "tokens_out": 0,
    }  # fmt: skip
    return float(track(server, body)["agent_cost"])


def test_the_price_book_refreshes_without_a_restart_and_keeps_the_last_good_one(
    tmp_path: Path, upstream: tuple[Upstream, str]
) -> None:
    state, url = upstream
    prices = f"prices: {{url: '{url}', refresh_interval_s: 1, retry_interval_s: 1}}\n"
    server = make_server(tmp_path, prices).start()
    start = time.time_ns() - 60 * 10**9
    try:
        wait_for(lambda: refreshes(server, "updated") >= 1, "the first fetch")
        assert priced(server) == 7.0
        post_spans(server, [llm_span(1, start, tokens_in=1_000_000)])  # the worker starts now

        state.prompt = "0.000008"
        wait_for(lambda: refreshes(server, "updated") >= 2, "the changed price list")
        assert priced(server) == 8.0
        # Spans are priced in the decode worker process: it got the new book too.
        post_spans(server, [llm_span(2, start, tokens_in=1_000_000), root_span(start)])

        state.status = 500
        failed = refreshes(server, "failed")
        wait_for(lambda: refreshes(server, "failed") > failed, "a failed fetch")
        assert priced(server) == 8.0
        assert has(httpx.get(f"{server.base_url}/metrics").text, "agentledger_price_book_info")
    finally:
        assert server.stop() == 0
    assert "s3cret" not in "".join(server.output)
    cost = server.query("SELECT cost_usd FROM spans WHERE span_type = 'llm' ORDER BY span_id")
    assert cost == [(pytest.approx(7.0 + 100 * 1e-6),), (pytest.approx(8.0 + 100 * 1e-6),)]

    again = make_server(tmp_path, prices).start()  # the source is still down
    try:
        assert priced(again) == 8.0
        wait_for(lambda: refreshes(again, "failed") >= 1, "a failed fetch after the restart")
        assert priced(again) == 8.0
    finally:
        assert again.stop() == 0
