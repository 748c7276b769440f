"""Output evaluation's outbound side against the real server: the LLM judge over each
provider's API (fake providers on local sockets), signed and retried callbacks, Slack
notifications, attachments and signed media links, and the SSRF refusals.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.outbound.client import verify
from tests.e2e.server import KEYS, Server, make_server
from tests.fixtures.fake_judges import KEY as JUDGE_KEY
from tests.fixtures.fake_judges import FakeJudges
from tests.fixtures.loopback import loopback_name
from tests.fixtures.receiver import Answer, Receiver

INGEST, ADMIN, READ = (KEYS[("acme", s)] for s in ("ingest", "admin", "read"))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_for(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@pytest.fixture(scope="module")
def judges() -> Iterator[FakeJudges]:
    with FakeJudges(slow_s=3.0) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, judges: FakeJudges) -> Iterator[Server]:
    urls = ", ".join(f"{p}: {judges.base_url!r}" for p in ("openai", "anthropic", "openrouter"))
    extra = (
        "outbound: {allow_private: true}\n"
        f"judge: {{timeout_s: 1, retries: 0, base_urls: {{{urls}}}}}\n"
        "evals: {callback_base_delay_s: 0.2, callback_max_delay_s: 0.5, judge_timeout_s: 5}\n"
    )
    s = make_server(tmp_path_factory.mktemp("out"), extra).start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            assert s.stop() == 0


def post(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{server.base_url}/api/logs", headers=auth(INGEST), json=body, timeout=30)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def test_the_llm_judge(server: Server, judges: FakeJudges) -> None:
    base = server.base_url
    settings = {"openaiApiKey": JUDGE_KEY, "anthropicApiKey": JUDGE_KEY}
    assert (
        httpx.patch(f"{base}/api/settings", headers=auth(ADMIN), json=settings).status_code == 200
    )
    shown = httpx.get(f"{base}/api/settings", headers=auth(ADMIN)).json()
    assert shown["openaiApiKey"] == JUDGE_KEY[:4] + "…" and JUDGE_KEY not in json.dumps(shown)
    rule = {
        "name": "Polite",
        "type": "llm_judge",
        "value": "Is the reply polite and free of refund promises?",
        "llmJudgeProvider": "openai",
        "llmJudgeModel": "gpt-4o-mini",
        "projectName": "judged",
    }
    r = httpx.post(f"{base}/api/rules", headers=auth(ADMIN), json=rule)
    assert r.status_code == 201, r.text
    rule_id = r.json()["id"]
    body = {"project": "judged", "output": "Thanks for waiting!", "sync": True}

    judges.queue("pass")
    ok = post(server, body)
    assert (ok["status"], ok["confidenceScore"]) == ("pass", 0.92)
    sent = judges.bodies()[-1]
    assert sent["model"] == "gpt-4o-mini" and "Thanks for waiting!" in json.dumps(sent)
    judges.queue("fail")
    flagged = post(server, body)
    assert flagged["status"] == "flagged" and "refund" in flagged["explanation"]
    judges.queue("refusal")
    assert post(server, body)["status"] == "error"
    judges.queue("slow")
    started = time.monotonic()
    timed_out = post(server, body)
    assert timed_out["status"] == "error" and time.monotonic() - started < 3.0
    assert timed_out["verdict"]["rules"][0]["outcome"] == "error"

    patch = {"llmJudgeProvider": "anthropic", "llmJudgeModel": None}
    assert (
        httpx.patch(f"{base}/api/rules/{rule_id}", headers=auth(ADMIN), json=patch).status_code
        == 200
    )
    time.sleep(0.1)
    judges.queue("fail")
    async_log = post(server, {"project": "judged", "output": "We will refund you."})
    status = wait_for(
        lambda: (
            s
            if (
                s := httpx.get(
                    f"{base}/api/logs/{async_log['id']}/status", headers=auth(INGEST)
                ).json()
            )["status"]
            != "pending"
            else None
        )
    )
    assert status["verdict"] == "flagged" and judges.requests[-1].path == "/v1/messages"
    evaluated = httpx.post(
        f"{base}/api/rules/evaluate",
        headers=auth(INGEST),
        json={
            "output": "hello",
            "rule": {"type": "llm_judge", "value": "Polite?", "llmJudgeProvider": "openrouter"},
        },
    ).json()
    assert evaluated["status"] == "error"  # no openrouter key in the settings
    assert "openrouter" in evaluated["explanation"]


def test_callbacks_are_signed_and_retried(server: Server) -> None:
    base = server.base_url
    secret = httpx.post(f"{base}/api/settings/rotate-callback-secret", headers=auth(ADMIN)).json()[
        "callbackSecret"
    ]
    with Receiver() as hook:
        hook.script("/cb", Answer(503), Answer(500), Answer(200))
        log = post(server, {"project": "cb", "output": "hi", "callbackUrl": hook.url("/cb")})
        calls = wait_for(lambda: [r for r in hook.requests if r.path == "/cb"][2:] or None)
        assert calls, hook.requests
        for request in [r for r in hook.requests if r.path == "/cb"]:
            header = request.headers["x-agentledger-signature"]
            assert verify(secret, request.body, header)
            assert not verify(secret + "x", request.body, header)
        payload = json.loads(calls[-1].body)
        assert payload["id"] == log["id"] and payload["status"] == "pass"
        assert payload["event"] == "log.evaluated"
        time.sleep(1.0)
        assert len([r for r in hook.requests if r.path == "/cb"]) == 3  # delivered: no more

        decided = post(
            server,
            {
                "project": "cb",
                "output": "hi",
                "sync": True,
                "callbackUrl": hook.url("/dec"),
                "callbackEvents": "decisions",
            },
        )
        time.sleep(0.5)
        assert not [r for r in hook.requests if r.path == "/dec"]  # the verdict is no decision
        r = httpx.patch(
            f"{base}/api/logs/{decided['id']}/decision",
            headers=auth(ADMIN),
            json={"decision": "approved"},
        )
        assert r.status_code == 200
        got = wait_for(lambda: [r for r in hook.requests if r.path == "/dec"])
        event = json.loads(got[0].body)
        assert (event["event"], event["humanDecision"]) == ("log.decision", "approved")
        assert event["decidedBy"] == "al_admin_aaaa0003"


def test_slack_notification_carries_the_incident_cost(server: Server) -> None:
    base = server.base_url
    with Receiver() as slack:
        settings = {
            "slackWebhookUrl": slack.url("/services/T0/B0/x"),
            "notifyOnFlag": True,
            "estimatedIncidentCostUsd": 250,
            "outboundWebhookUrl": slack.url("/hook"),
            "outboundWebhookEvents": ["flagged"],
        }
        r = httpx.patch(f"{base}/api/settings", headers=auth(ADMIN), json=settings)
        assert r.status_code == 200, r.text
        rule = {
            "name": "No refunds",
            "type": "keyword_forbidden",
            "value": "refund",
            "projectName": "slacked",
        }
        assert httpx.post(f"{base}/api/rules", headers=auth(ADMIN), json=rule).status_code == 201
        post(server, {"project": "slacked", "output": "fine", "sync": True})
        post(server, {"project": "slacked", "output": "a refund", "sync": True})
        wait_for(lambda: len(slack.requests) >= 2)
        time.sleep(0.5)
        assert sorted(r.path for r in slack.requests) == ["/hook", "/services/T0/B0/x"]
        by_path = {r.path: r for r in slack.requests}  # only the flagged log notified
        message = json.loads(by_path["/services/T0/B0/x"].body)
        assert "$250.00" in json.dumps(message) and "slacked" in json.dumps(message)
        hook = by_path["/hook"]
        assert "x-agentledger-signature" in hook.headers
        event = json.loads(hook.body)
        assert event["estimatedIncidentCostUsd"] == 250 and event["status"] == "flagged"
    off = {"slackWebhookUrl": "", "outboundWebhookUrl": None}
    assert httpx.patch(f"{base}/api/settings", headers=auth(ADMIN), json=off).status_code == 200


def test_attachments_and_signed_media(server: Server) -> None:
    base = server.base_url
    with Receiver(
        lambda _r: Answer(body=b"%PDF-1.4 fake", headers={"Content-Type": "application/pdf"})
    ) as files:
        log = post(
            server,
            {
                "project": "media",
                "output": "see attached",
                "attachments": [
                    {
                        "upload": base64.b64encode(b"hello notes").decode(),
                        "name": "notes.txt",
                        "contentType": "text/plain",
                    },
                    {"url": files.url("/docs/report.pdf")},
                ],
            },
        )
    full = httpx.get(f"{base}/api/logs/{log['id']}", headers=auth(READ)).json()
    first, second = full["attachments"]
    assert first["key"] == f"acme/{log['id']}/0-notes.txt" and first["size"] == 11
    assert second["contentType"] == "application/pdf"
    r = httpx.get(base + first["url"], headers=auth(READ))
    assert r.status_code == 302
    signed = r.headers["location"]
    assert "signature=" in signed and "expires=" in signed
    body = httpx.get(base + signed)  # no token: the signature is the permission
    assert (body.status_code, body.content) == (200, b"hello notes")
    assert httpx.get(base + signed.replace("signature=", "signature=0")).status_code == 403
    assert (
        httpx.get(base + second["url"], headers=auth(READ), follow_redirects=True).content
        == b"%PDF-1.4 fake"
    )
    other = auth(KEYS[("globex", "read")])
    assert httpx.get(base + first["url"], headers=other).status_code == 404
    for path in (
        "/api/media/acme/../../secret.key",
        "/api/media/acme/%2e%2e/x/y",
        "/api/media/.signing.key",
        "/api/media/acme/x",
    ):
        assert httpx.get(base + path, headers=auth(READ)).status_code == 404, path
    too_big = {"project": "media", "output": "x", "attachments": [{"upload": "!!notbase64"}]}
    r = httpx.post(f"{base}/api/logs", headers=auth(INGEST), json=too_big)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "attachments[0].upload"


def test_ssrf_refusals(tmp_path: Path) -> None:
    server = make_server(tmp_path).start()  # outbound.allow_private is off by default
    try:
        base = server.base_url
        for body, field in (
            ({"callbackUrl": "http://127.0.0.1:9/cb"}, "callbackUrl"),
            ({"callbackUrl": "http://[::1]/cb"}, "callbackUrl"),
            ({"attachments": [{"url": "http://10.0.0.5/a.pdf"}]}, "attachments[0].url"),
            (
                {"attachments": [{"url": "http://169.254.169.254/latest/meta-data"}]},
                "attachments[0].url",
            ),
        ):
            r = httpx.post(
                f"{base}/api/logs",
                headers=auth(INGEST),
                json={"project": "p", "output": "x", **body},
            )
            assert r.status_code == 422, (body, r.text)
            assert r.json()["details"][0]["field"] == field
            assert "refused" in r.json()["details"][0]["message"]
        for name, url in (
            ("slackWebhookUrl", "http://192.168.1.1/hook"),
            ("outboundWebhookUrl", "http://localhost:8080/x"),
        ):
            r = httpx.patch(f"{base}/api/settings", headers=auth(ADMIN), json={name: url})
            assert r.status_code == 422 and r.json()["details"][0]["field"] == name, r.text
        assert httpx.get(f"{base}/api/logs", headers=auth(READ)).json()["total"] == 0
    finally:
        server.stop()


def test_every_user_given_url_gets_the_delivery_check_at_creation(tmp_path: Path) -> None:
    """A host written percent-encoded, and a host name that resolves to loopback, are refused
    with a 422 naming the field wherever a user gives a URL: a log's callbackUrl and url
    attachments, the workspace's Slack and outbound webhooks, alert rules' Slack and webhook
    channels. Nothing is stored."""
    name = loopback_name()
    urls = ["http://%31%32%37.0.0.1/hook"]
    if name is not None:  # every machine seen has one; without, the encoded form still runs
        urls.append(f"http://{name}:9/hook")
    server = make_server(tmp_path).start()  # outbound.allow_private is off by default
    try:
        base = server.base_url
        for url in urls:
            for extra, field in (
                ({"callbackUrl": url}, "callbackUrl"),
                ({"attachments": [{"url": url}]}, "attachments[0].url"),
            ):
                body = {"project": "p", "output": "x", **extra}
                r = httpx.post(f"{base}/api/logs", headers=auth(INGEST), json=body)
                _refused(r, field, url)
            for setting in ("slackWebhookUrl", "outboundWebhookUrl"):
                r = httpx.patch(f"{base}/api/settings", headers=auth(ADMIN), json={setting: url})
                _refused(r, setting, url)
            for channel in ({"type": "slack", "url": url}, {"type": "webhook", "url": url}):
                rule = {"name": "r", "condition": "run_status", "channels": [channel]}
                r = httpx.post(f"{base}/api/alert-rules", headers=auth(ADMIN), json=rule)
                _refused(r, "channels[0]", url)
        assert httpx.get(f"{base}/api/logs", headers=auth(READ)).json()["total"] == 0
        settings = httpx.get(f"{base}/api/settings", headers=auth(ADMIN)).json()
        assert settings["slackWebhookUrl"] is None and settings["outboundWebhookUrl"] is None
        rules = httpx.get(f"{base}/api/alert-rules", headers=auth(ADMIN)).json()
        assert rules["alert_rules"] == []
    finally:
        server.stop()


def _refused(r: httpx.Response, field: str, url: str) -> None:
    assert r.status_code == 422, (field, url, r.text)
    [detail] = [d for d in r.json()["details"] if d["field"] == field]
    assert "refused" in detail["message"], (field, url, detail)
