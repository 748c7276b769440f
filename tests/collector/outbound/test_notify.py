"""Tests of collector/outbound/notify.py: Slack blocks, signed webhooks checked by a local receiver,
email through a local SMTP server (plain, STARTTLS, TLS, AUTH), retries and failures, and the
registry's build_channel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from collector.outbound.client import OutboundFailed, OutboundRefused, verify
from collector.outbound.config import OutboundPolicy, SmtpSettings
from collector.outbound.notify import (
    EmailChannel,
    Notification,
    SlackChannel,
    WebhookChannel,
    slack_message,
)
from collector.registry import build_channel
from tests.fixtures.receiver import Answer, Receiver
from tests.fixtures.smtp import SmtpServer

LOCAL = OutboundPolicy(allow_private=True, timeout_s=5)
NOTE = Notification(
    kind="alert.triggered",
    title="Cost per run above $0.50 — support-bot",
    text="Run r-42 of support-bot cost $0.75 <more than> the $0.50 threshold & rising.",
    fields={
        "Rule": "Cost per run",
        "Workflow": "support-bot",
        "Value": "$0.75",
        "Threshold": "$0.50",
        "Run": "r-42",
        "Link": "https://agentledger.example/runs/r-42",
    },
    payload={"event": "alert.triggered", "rule_id": "rule_1", "triggered_value": 0.75},
)


def test_slack_message_is_readable_blocks() -> None:
    doc = slack_message(NOTE)
    assert doc["text"].startswith("Cost per run above $0.50 — support-bot — Run r-42")
    header, body, fields, actions, context = doc["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": NOTE.title}}
    assert "&lt;more than&gt;" in body["text"]["text"] and "&amp; rising" in body["text"]["text"]
    assert {"type": "mrkdwn", "text": "*Threshold*\n$0.50"} in fields["fields"]
    assert len(fields["fields"]) == 5  # the link is a button, not a field
    assert actions["elements"][0]["url"] == "https://agentledger.example/runs/r-42"
    assert "alert.triggered" in context["elements"][0]["text"]


def test_slack_limits_are_respected() -> None:
    many = {f"f{i}": "v" * 3000 for i in range(13)}
    note = Notification("log.flagged", "t" * 400, "x" * 5000, many, {})
    blocks = slack_message(note)["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150 and len(blocks[1]["text"]["text"]) == 3000
    sections = [b for b in blocks if "fields" in b]
    assert [len(b["fields"]) for b in sections] == [10, 3]
    assert all(len(f["text"]) <= 2000 for b in sections for f in b["fields"])


def test_slack_channel_posts_to_the_webhook() -> None:
    with Receiver() as rx:
        channel = SlackChannel(rx.url("/services/T0/B0/secretpath"), LOCAL)
        assert "secretpath" not in channel.name and "secretpath" not in repr(channel)
        asyncio.run(channel.send(NOTE))
        sent = rx.requests[0]
        assert sent.path == "/services/T0/B0/secretpath"
        assert json.loads(sent.body) == slack_message(NOTE)


def test_slack_errors_raise_after_retries() -> None:
    with Receiver() as rx:
        rx.script("/hook", Answer(500), Answer(500), Answer(500))
        with pytest.raises(OutboundFailed, match="500"):
            asyncio.run(SlackChannel(rx.url("/hook"), LOCAL, 2, base_delay_s=0.01).send(NOTE))
        assert len(rx.requests) == 2
        rx.script("/gone", Answer(404, b"no_service"))
        with pytest.raises(OutboundFailed, match="404"):
            asyncio.run(SlackChannel(rx.url("/gone"), LOCAL).send(NOTE))
        assert len(rx.requests) == 3  # a 404 is not retried


def test_webhook_is_signed_and_a_receiver_can_check_it() -> None:
    with Receiver() as rx:
        asyncio.run(WebhookChannel(rx.url("/in"), "whsec_123", LOCAL).send(NOTE))
        got = rx.requests[0]
        assert json.loads(got.body) == NOTE.payload
        assert got.headers["x-agentledger-event"] == "alert.triggered"
        assert verify("whsec_123", got.body, got.headers["x-agentledger-signature"])
        assert not verify("other", got.body, got.headers["x-agentledger-signature"])


def test_webhook_retries_then_delivers() -> None:
    with Receiver() as rx:
        rx.script("/in", Answer(503), Answer(429, headers={"retry-after": "0"}), Answer(204))
        channel = WebhookChannel(rx.url("/in"), None, LOCAL, base_delay_s=0.01)
        asyncio.run(channel.send(NOTE))
        assert len(rx.requests) == 3
        assert "x-agentledger-signature" not in rx.requests[0].headers


def test_webhook_failure_raises_after_its_attempts() -> None:
    with Receiver() as gone:
        url = gone.url("/in")
    with pytest.raises(OutboundFailed):
        asyncio.run(WebhookChannel(url, "s", LOCAL, attempts=1).send(NOTE))


def test_refused_urls_fail_at_construction() -> None:
    with pytest.raises(OutboundRefused, match=r"169\.254\.169\.254"):
        SlackChannel("http://169.254.169.254/x", OutboundPolicy())
    with pytest.raises(OutboundRefused, match="loopback"):
        WebhookChannel("http://localhost:8080/x", None, OutboundPolicy())


def smtp_settings(server: SmtpServer, **kw: object) -> SmtpSettings:
    defaults: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "tls": "none",
        "sender": "alerts@agentledger.example",
        "ca_file": server.ca_file,
        "timeout_s": 5,
    }
    return SmtpSettings(**{**defaults, **kw})  # type: ignore[arg-type]


def test_email_plain(tmp_path: Path) -> None:
    with SmtpServer(tmp_path) as smtp:
        channel = EmailChannel(smtp_settings(smtp), ["ops@example.com", "cto@example.com"])
        asyncio.run(channel.send(NOTE))
        (got,) = smtp.received
    assert got.sender == "alerts@agentledger.example"
    assert got.recipients == ["ops@example.com", "cto@example.com"]
    assert got.message["Subject"] == NOTE.title
    assert got.message["X-Agentledger-Event"] == "alert.triggered"
    body = got.message.get_content()
    assert NOTE.text in body and "Threshold: $0.50" in body and "Run:       r-42" in body


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_email_over_tls_with_auth(tmp_path: Path, tls: str) -> None:
    with SmtpServer(tmp_path, tls=tls, auth=("alerts", "s3cret")) as smtp:  # type: ignore[arg-type]
        settings = smtp_settings(smtp, tls=tls, username="alerts", password="s3cret")
        asyncio.run(EmailChannel(settings, ["ops@example.com"]).send(NOTE))
        assert len(smtp.received) == 1 and smtp.logins == ["alerts"]
        wrong = smtp_settings(smtp, tls=tls, username="alerts", password="nope")
        with pytest.raises(OutboundFailed, match="535") as e:
            asyncio.run(EmailChannel(wrong, ["ops@example.com"], base_delay_s=0.01).send(NOTE))
        assert e.value.permanent and "nope" not in str(e.value)


def test_email_tls_verifies_the_certificate(tmp_path: Path) -> None:
    with SmtpServer(tmp_path, tls="starttls") as smtp:
        untrusted = smtp_settings(smtp, tls="starttls", ca_file=None)
        channel = EmailChannel(untrusted, ["ops@example.com"], attempts=1)
        with pytest.raises(OutboundFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            asyncio.run(channel.send(NOTE))
        assert smtp.received == []


def test_email_retries_a_deferral_and_fails_on_refusal(tmp_path: Path) -> None:
    with SmtpServer(tmp_path, defer=1, refuse=("nobody@example.com",)) as smtp:
        settings = smtp_settings(smtp)
        asyncio.run(EmailChannel(settings, ["ops@example.com"], base_delay_s=0.01).send(NOTE))
        assert len(smtp.received) == 1
        refused = EmailChannel(settings, ["nobody@example.com"], base_delay_s=0.01)
        with pytest.raises(OutboundFailed, match="550") as e:
            asyncio.run(refused.send(NOTE))
        assert e.value.permanent


def test_email_server_down_raises_after_retries(tmp_path: Path) -> None:
    with SmtpServer(tmp_path) as smtp:
        settings = smtp_settings(smtp)
    with pytest.raises(OutboundFailed, match="ConnectionRefused") as e:
        channel = EmailChannel(settings, ["ops@example.com"], attempts=2, base_delay_s=0.01)
        asyncio.run(channel.send(NOTE))
    assert not e.value.permanent


def test_smtp_password_never_in_repr(tmp_path: Path) -> None:
    settings = SmtpSettings(host="mail", username="u", password="hunter2")
    channel = EmailChannel(settings, ["ops@example.com"])
    assert "hunter2" not in repr(settings) and "hunter2" not in repr(channel)
    assert "hunter2" not in channel.name


def test_build_channel_specs(tmp_path: Path) -> None:
    smtp = SmtpSettings(host="mail")
    url = "https://hooks.slack.com/services/a/b/c"
    slack = build_channel({"type": "slack", "url": url}, smtp=None, policy=OutboundPolicy())
    assert isinstance(slack, SlackChannel) and slack.name == "slack:https://hooks.slack.com/…"
    hook = build_channel(
        {"type": "webhook", "url": "https://example.com/h", "secret": "s", "name": "ops"},
        smtp=None,
        policy=OutboundPolicy(),
    )
    assert isinstance(hook, WebhookChannel)
    email = build_channel({"type": "email", "to": ["a@example.com"]}, smtp=smtp, policy=LOCAL)
    assert isinstance(email, EmailChannel) and email.name == "email:a@example.com"


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"type": "pager"}, "slack, webhook or email"),
        ({"url": "https://x.example"}, "slack, webhook or email"),
        ({"type": "slack"}, "needs `url`"),
        ({"type": "slack", "url": "https://x.example", "urll": 1}, "unknown slack channel key"),
        ({"type": "slack", "url": "ftp://x.example"}, "scheme"),
        ({"type": "webhook", "url": "http://10.0.0.5/h"}, "private"),
        ({"type": "webhook", "url": "https://x.example", "secret": 5}, "secret"),
        ({"type": "email", "to": []}, "one or more addresses"),
        ({"type": "email", "to": ["not-an-address"]}, "not an email address"),
        ({"type": "email", "to": ["a@example.com\r\nBcc: x@y.z"]}, "not an email address"),
    ],
)
def test_build_channel_refuses_bad_specs(spec: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        build_channel(spec, smtp=SmtpSettings(host="mail"), policy=OutboundPolicy())


def test_email_without_smtp_is_refused() -> None:
    with pytest.raises(ValueError, match=r"notifications\.smtp"):
        build_channel({"type": "email", "to": ["a@example.com"]}, smtp=None, policy=LOCAL)
