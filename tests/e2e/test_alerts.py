"""Alerts in the running server: spans in over OTLP (the OpenTelemetry SDK), a run derived, an
alert event in `GET /api/alert-events` and the run detail, delivered to a local Slack/webhook
receiver (signature checked) and a local SMTP server; failed deliveries retried; rules managed
with an admin key; never a second event for the same run after a re-derivation or a SIGKILL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from collector.outbound.client import verify
from tests.e2e.server import KEYS, Server, make_server
from tests.fixtures.receiver import Answer, Receiver
from tests.fixtures.smtp import SmtpServer

READ = {"authorization": f"Bearer {KEYS[('acme', 'read')]}"}
ADMIN = {"authorization": f"Bearer {KEYS[('acme', 'admin')]}"}
GLOBEX_READ = {"authorization": f"Bearer {KEYS[('globex', 'read')]}"}
GLOBEX_ADMIN = {"authorization": f"Bearer {KEYS[('globex', 'admin')]}"}
SECRET = "whsec_0123456789abcdef"


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def send_run(server: Server, agent: str, tokens: int = 100, failed: bool = False) -> SpanContext:
    """One agent run (an agent span with an LLM call) through the SDK's OTLP/HTTP exporter."""
    exporter = OTLPSpanExporter(
        endpoint=f"{server.base_url}/v1/traces",
        headers={"authorization": f"Bearer {KEYS[('acme', 'ingest')]}"},
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-alerts"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("e2e")
    with tracer.start_as_current_span(f"invoke_agent {agent}") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        root.set_attribute("gen_ai.agent.name", agent)
        with tracer.start_as_current_span("chat gpt-4o") as llm:
            llm.set_attribute("gen_ai.operation.name", "chat")
            llm.set_attribute("gen_ai.request.model", "gpt-4o")
            llm.set_attribute("gen_ai.usage.input_tokens", tokens - 10)
            llm.set_attribute("gen_ai.usage.output_tokens", 10)
        if failed:
            root.set_status(Status(StatusCode.ERROR, "boom"))
        context = root.get_span_context()
    provider.shutdown()
    return context


def send_late_span(server: Server, parent: SpanContext) -> None:
    """A child span of an already-finished run, arriving later: the run is re-derived."""
    exporter = OTLPSpanExporter(
        endpoint=f"{server.base_url}/v1/traces",
        headers={"authorization": f"Bearer {KEYS[('acme', 'ingest')]}"},
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-alerts"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    remote = SpanContext(parent.trace_id, parent.span_id, True, TraceFlags(1))
    ctx = trace.set_span_in_context(NonRecordingSpan(remote))
    with provider.get_tracer("e2e").start_as_current_span("chat gpt-4o", context=ctx) as llm:
        llm.set_attribute("gen_ai.operation.name", "chat")
        llm.set_attribute("gen_ai.request.model", "gpt-4o")
        llm.set_attribute("gen_ai.usage.input_tokens", 5)
    provider.shutdown()


def events(server: Server, headers: dict[str, str] = READ, **params: Any) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.base_url}/api/alert-events", headers=headers, params=params)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["alert_events"]
    return found


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def alerts_yaml(receiver: Receiver, smtp_port: int) -> str:
    channels = [
        {"type": "slack", "url": receiver.url("/slack")},
        {"type": "webhook", "url": receiver.url("/hook"), "secret": SECRET},
        {"type": "email", "to": ["oncall@example.com"]},
    ]
    rule = {
        "org": "acme",
        "name": "Big run",
        "condition": "run_total_tokens",
        "threshold": 1000,
        "workflows": ["planner"],
        "channels": channels,
    }
    return (
        "outbound: {allow_private: true}\n"
        f"notifications: {{smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: none}}}}\n"
        "alerts:\n  evaluation_interval_s: 1\n  cooldown_s: 0\n  retry_base_s: 1\n"
        f"  rules: [{json.dumps(rule)}]\n"
    )


def test_a_declared_rule_fires_once_and_notifies_every_channel(
    tmp_path: Path, receiver: Receiver
) -> None:
    with SmtpServer(tmp_path) as smtp:
        server = make_server(tmp_path, alerts_yaml(receiver, smtp.port)).start()
        try:
            send_run(server, "planner", tokens=1000)  # at the threshold: no event
            root = send_run(server, "planner", tokens=1500)
            send_run(server, "other", tokens=5000)  # outside the rule's workflows
            (event,) = wait_for(lambda: events(server), what="the alert event")
            assert event["alert_rule_name"] == "Big run"
            assert event["workflow_name"] == "planner"
            assert event["triggered_value"] == 1500 and event["threshold_value"] == 1000
            assert event["resolved_at"] is None and event["run_id"]
            assert set(event) == {
                "id", "alert_rule_id", "alert_rule_name", "run_id", "workflow_name",
                "triggered_value", "threshold_value", "notification_sent", "resolved_at",
                "created_at",
            }  # fmt: skip
            sent = wait_for(
                lambda: [e for e in events(server) if e["notification_sent"]],
                what="notification_sent",
            )
            assert sent[0]["id"] == event["id"]

            slack = [r for r in receiver.requests if r.path == "/slack"]
            hook = [r for r in receiver.requests if r.path == "/hook"]
            assert len(slack) == 1 and len(hook) == 1 and len(smtp.received) == 1
            message = json.loads(slack[0].body)
            assert "Run tokens 1,500 above 1,000" in message["text"]
            assert "planner" in message["text"] and event["run_id"] in json.dumps(message)
            assert verify(SECRET, hook[0].body, hook[0].headers["x-agentledger-signature"])
            assert not verify("wrong", hook[0].body, hook[0].headers["x-agentledger-signature"])
            payload = json.loads(hook[0].body)
            assert payload["kind"] == "alert.triggered"
            assert payload["alert_event"]["id"] == event["id"]
            mail = smtp.received[0]
            assert mail.recipients == ["oncall@example.com"]
            assert "Run tokens 1,500 above 1,000 — planner" in str(mail.message["Subject"])

            detail = httpx.get(f"{server.base_url}/api/runs/{event['run_id']}", headers=READ)
            assert detail.status_code == 200
            detail = detail.json()
            assert [e["id"] for e in detail["alert_events"]] == [event["id"]]
            assert events(server, GLOBEX_READ) == []

            rules = httpx.get(f"{server.base_url}/api/alert-rules", headers=ADMIN).json()
            (rule,) = rules["alert_rules"]
            assert rule["source"] == "config" and rule["id"] == event["alert_rule_id"]
            assert rule["channels"][1]["secret"] == "whse…"
            assert "/slack" not in json.dumps(rule)
            url = f"{server.base_url}/api/alert-rules/{rule['id']}"
            assert httpx.delete(url, headers=ADMIN).status_code == 409

            send_late_span(server, root)  # re-derives the run
            time.sleep(3)
            assert len(events(server)) == 1
        finally:
            server.kill()
        first_output = "".join(server.output)
        server = Server(server.data_dir, server.config_path).start()
        try:
            send_late_span(server, root)
            time.sleep(4)
            assert len(events(server)) == 1
            assert len([r for r in receiver.requests if r.path == "/slack"]) == 1
        finally:
            assert server.stop() == 0
        # Channel secrets are sealed at rest (the Slack URL is itself a secret).
        (stored,) = server.query("SELECT spec FROM alert_rules")
        assert SECRET not in stored[0] and "/slack" not in stored[0]
        assert receiver.url("/hook") in stored[0]
        output = first_output + "".join(server.output)
        assert "Traceback" not in output, output[output.find("Traceback") - 300 :][:3000]


def test_api_rules_failed_delivery_retry_and_manual_resolve(
    tmp_path: Path, receiver: Receiver
) -> None:
    extra = "outbound: {allow_private: true}\nalerts: {evaluation_interval_s: 1, retry_base_s: 1}\n"
    server = make_server(tmp_path, extra).start()
    try:
        base = f"{server.base_url}/api/alert-rules"
        bad = httpx.post(base, headers=ADMIN, json={"name": "x", "condition": "run_costs"})
        assert bad.status_code == 422
        assert bad.json()["code"] == "validation_error"
        assert bad.json()["details"][0]["field"] == "condition"
        window = {"name": "w", "condition": "workflow_error_rate", "threshold": 0.5}
        missing = httpx.post(base, headers=ADMIN, json=window).json()
        assert {"field": "window_s", "message": missing["details"][0]["message"]} in missing[
            "details"
        ]
        assert httpx.post(base, headers=READ, json={}).status_code == 401
        refused = {"name": "x", "condition": "run_status",
                   "channels": [{"type": "email", "to": ["a@b.example"]}]}  # fmt: skip
        assert httpx.post(base, headers=ADMIN, json=refused).status_code == 422  # no SMTP

        receiver.script("/fail", *[Answer(503)] * 5)  # every attempt of the first delivery
        body = {
            "name": "Failed runs",
            "condition": "run_status",
            "channels": [{"type": "webhook", "url": receiver.url("/fail"), "secret": SECRET}],
        }
        created = httpx.post(base, headers=ADMIN, json=body)
        assert created.status_code == 201, created.text
        rule = created.json()
        assert rule["source"] == "api" and rule["enabled"] is True
        assert rule["channels"][0]["secret"] == "whse…"
        assert httpx.post(base, headers=ADMIN, json=body).status_code == 409  # name taken
        one = f"{base}/{rule['id']}"
        assert httpx.get(one, headers=GLOBEX_ADMIN).status_code == 404
        assert httpx.get(one, headers=ADMIN).json()["name"] == "Failed runs"

        send_run(server, "worker", failed=True)
        (event,) = wait_for(lambda: events(server), what="the alert event")
        assert event["alert_rule_id"] == rule["id"] and event["triggered_value"] == 1.0
        wait_for(lambda: len(receiver.requests) >= 5, timeout=60, what="five failed attempts")
        assert events(server)[0]["notification_sent"] is False
        wait_for(lambda: events(server)[0]["notification_sent"], timeout=60, what="the retry")
        assert len(receiver.requests) == 6
        assert verify(SECRET, receiver.requests[-1].body,
                      receiver.requests[-1].headers["x-agentledger-signature"])  # fmt: skip

        # Resolving by hand: admin only, own org only.
        resolve = f"{server.base_url}/api/alert-events/{event['id']}"
        assert httpx.patch(resolve, headers=READ, json={"resolved": True}).status_code == 401
        wrong = httpx.get(resolve, headers=ADMIN)
        assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"
        assert httpx.patch(resolve, headers=GLOBEX_ADMIN, json={}).status_code == 404
        assert httpx.patch(resolve, headers=ADMIN, json={"resolved": False}).status_code == 422
        done = httpx.patch(resolve, headers=ADMIN, json={"resolved": True})
        assert done.status_code == 200 and done.json()["resolved_at"] is not None
        assert [e["id"] for e in events(server, resolved="true")] == [event["id"]]
        assert events(server, resolved="false") == []
        assert events(server, rule_id="ar_nope") == []

        # Disabled rules do not fire; the update keeps the stored secret.
        off = httpx.post(f"{one}/disable", headers=ADMIN).json()
        assert off["enabled"] is False
        send_run(server, "worker2", failed=True)
        time.sleep(3)
        assert len(events(server)) == 1
        patched = httpx.patch(one, headers=ADMIN, json={**off, "name": "Failed runs v2"})
        assert patched.status_code == 200, patched.text
        assert patched.json()["name"] == "Failed runs v2"
        on = httpx.post(f"{one}/enable", headers=ADMIN).json()
        assert on["enabled"] is True
        send_run(server, "worker3", failed=True)
        second = wait_for(lambda: len(events(server)) == 2 and events(server)[0], what="event 2")
        time.sleep(3)  # within the default 300 s cool-down of the first notification:
        assert len(receiver.requests) == 6  # recorded, not sent
        assert events(server)[0]["notification_sent"] is False

        quick = httpx.patch(one, headers=ADMIN, json={"cooldown_s": 0})
        assert quick.status_code == 200 and quick.json()["cooldown_s"] == 0
        send_run(server, "worker4", failed=True)
        wait_for(lambda: len(receiver.requests) == 7, what="the third delivery")
        last = receiver.requests[-1]
        assert verify(SECRET, last.body, last.headers["x-agentledger-signature"])
        assert json.loads(last.body)["alert_event"]["alert_rule_name"] == "Failed runs v2"

        ids = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
            page = httpx.get(f"{server.base_url}/api/alert-events", headers=READ, params=params)
            ids += [e["id"] for e in page.json()["alert_events"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert len(ids) == 3 and ids[1] == second["id"] and ids[2] == event["id"]
        assert httpx.delete(one, headers=ADMIN).status_code == 204
        assert httpx.get(one, headers=ADMIN).status_code == 404
        assert len(events(server)) == 3  # the history stays
    finally:
        assert server.stop() == 0
    output = "".join(server.output)
    assert "Traceback" not in output, output[output.find("Traceback") - 300 :][:3000]
    assert SECRET not in output  # never logged


def test_channel_secrets_are_never_logged(tmp_path: Path, receiver: Receiver) -> None:
    """A Slack webhook URL is itself a secret, and so is a webhook's signing secret."""
    slack_path = "/services/T0000/B0000/" + "x" * 24
    rule = {
        "org": "acme",
        "name": "Any failure",
        "condition": "run_status",
        "channels": [
            {"type": "slack", "url": receiver.url(slack_path)},
            {"type": "webhook", "url": receiver.url("/hook"), "secret": SECRET},
        ],
    }
    extra = f"outbound: {{allow_private: true}}\nalerts: {{rules: [{json.dumps(rule)}]}}\n"
    server = make_server(tmp_path, extra).start()
    try:
        send_run(server, "leaky", failed=True)
        wait_for(lambda: [e for e in events(server) if e["notification_sent"]], what="delivery")
    finally:
        assert server.stop() == 0
    leaks = [line for line in server.output if SECRET in line or slack_path in line]
    assert leaks == []
