"""Notification channels: Slack incoming webhooks, signed generic webhooks, email over SMTP.

Alerts and flagged logs become a `Notification`; `collector/registry.py` builds the channel a
rule names, and `send` delivers it over `collector/outbound/client.py` (HTTP) or smtplib (email).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol

from collector.outbound.client import (
    OutboundFailed,
    backoff,
    check_destination,
    check_url,
    deliver_or_error,
    label,
)
from collector.outbound.config import OutboundPolicy, SmtpSettings

__all__ = [
    "Channel", "EmailChannel", "Notification", "SlackChannel", "SmtpSettings", "WebhookChannel",
    "channel_from_spec", "check_channel", "email_message", "slack_message",
]  # fmt: skip


@dataclass(frozen=True)
class Notification:
    kind: str  # e.g. "alert.triggered", "alert.resolved", "log.flagged", "log.error"
    title: str  # one line, e.g. "Cost per run above $0.50 — support-bot"
    text: str  # a readable paragraph (Slack message body / email body)
    fields: Mapping[str, str]  # label -> value (rule, workflow, value, threshold, run, link)
    payload: Mapping[str, Any]  # the JSON document for generic webhooks (the event itself)


class Channel(Protocol):
    name: str  # "slack:https://hooks.slack.com/…" style, secret-free label

    async def send(self, note: Notification) -> None: ...  # raises on failure, after retries


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn(text: str, limit: int) -> str:
    """Slack mrkdwn escapes only &, < and >; cut to Slack's block limits."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


def _is_link(value: str) -> bool:
    return value.startswith(("https://", "http://")) and not any(c in value for c in " <>|")


def slack_message(note: Notification) -> dict[str, Any]:
    """Slack incoming-webhook JSON: a header, the text, the fields two by two, a link button
    for a field holding a URL; `text` is the fallback for notifications and old clients."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _one_line(note.title, 150)}},
    ]
    if note.text.strip():
        body = {"type": "mrkdwn", "text": _mrkdwn(note.text, 3000)}
        blocks.append({"type": "section", "text": body})
    items = [(k, v) for k, v in note.fields.items() if v != ""]
    plain = [(k, v) for k, v in items if not _is_link(v)]
    for start in range(0, len(plain), 10):  # Slack allows 10 fields a section
        fields = [
            {"type": "mrkdwn", "text": _mrkdwn(f"*{k}*\n{v}", 2000)}
            for k, v in plain[start : start + 10]
        ]
        blocks.append({"type": "section", "fields": fields})
    links = [(k, v) for k, v in items if _is_link(v)][:5]
    if links:
        buttons = [
            {"type": "button", "text": {"type": "plain_text", "text": _one_line(k, 75)}, "url": v}
            for k, v in links
        ]
        blocks.append({"type": "actions", "elements": buttons})
    footer = {"type": "mrkdwn", "text": _mrkdwn(f"agentledger · {note.kind}", 300)}
    blocks.append({"type": "context", "elements": [footer]})
    fallback = _one_line(note.title, 150) + (f" — {_one_line(note.text, 300)}" if note.text else "")
    return {"text": fallback, "blocks": blocks}


class SlackChannel:
    def __init__(
        self,
        webhook_url: str,
        policy: OutboundPolicy,
        attempts: int = 3,
        *,
        base_delay_s: float = 1.0,
    ) -> None:
        check_url(webhook_url, policy)
        self._url = webhook_url
        self._policy = policy
        self._attempts = attempts
        self._base_delay_s = base_delay_s
        self.name = f"slack:{label(webhook_url)}/…"  # the path is the webhook's secret

    def __repr__(self) -> str:
        return f"SlackChannel({self.name!r})"

    async def send(self, note: Notification) -> None:
        error = await deliver_or_error(
            self._url,
            slack_message(note),
            policy=self._policy,
            attempts=self._attempts,
            base_delay_s=self._base_delay_s,
        )
        if error is not None:
            raise error


class WebhookChannel:
    """POSTs `note.payload` as JSON, signed (`X-Agentledger-Signature`) when a secret is set,
    with `X-Agentledger-Event: <kind>`; retried with backoff on 5xx / 429 / network errors."""

    def __init__(
        self,
        url: str,
        secret: str | None,
        policy: OutboundPolicy,
        attempts: int = 5,
        *,
        base_delay_s: float = 1.0,
    ) -> None:
        check_url(url, policy)
        self._url = url
        self._secret = secret
        self._policy = policy
        self._attempts = attempts
        self._base_delay_s = base_delay_s
        self.name = f"webhook:{label(url)}/…"

    def __repr__(self) -> str:
        return f"WebhookChannel({self.name!r})"

    async def send(self, note: Notification) -> None:
        error = await deliver_or_error(
            self._url,
            note.payload,
            policy=self._policy,
            secret=self._secret,
            headers={"X-Agentledger-Event": note.kind},
            attempts=self._attempts,
            base_delay_s=self._base_delay_s,
        )
        if error is not None:
            raise error


def email_message(note: Notification, sender: str, to: Sequence[str]) -> EmailMessage:
    """A plain-text email: the title as subject, the text, then one "label: value" a line."""
    message = EmailMessage()
    message["Subject"] = _one_line(note.title, 200)
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["X-Agentledger-Event"] = _one_line(note.kind, 100)
    lines = [note.text.strip(), ""] if note.text.strip() else []
    width = max((len(k) for k in note.fields), default=0)
    lines += [f"{k + ':':<{width + 1}} {v}" for k, v in note.fields.items()]
    lines += ["", "-- ", "Sent by agentledger"]
    message.set_content("\n".join(lines) + "\n")
    return message


def _check_address(address: str) -> str:
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c in address for c in "\r\n ,;<>"):
        raise ValueError(f"not an email address: {address[:80]!r}")
    return address


class EmailChannel:
    """Plain-text email through the configured SMTP server (smtplib, in a thread). Connection
    problems and 4xx SMTP answers are retried; a 5xx rejection fails at once."""

    def __init__(
        self, smtp: SmtpSettings, to: Sequence[str], attempts: int = 3, base_delay_s: float = 1.0
    ) -> None:
        if isinstance(to, str) or not to:
            raise ValueError("an email channel needs a list of one or more addresses")
        self._to = [_check_address(a) for a in to]
        self._smtp = smtp
        self._attempts = max(1, attempts)
        self._base_delay_s = base_delay_s
        self.name = "email:" + ",".join(self._to)

    def __repr__(self) -> str:
        return f"EmailChannel({self.name!r}, via {self._smtp.host}:{self._smtp.port})"

    async def send(self, note: Notification) -> None:
        message = email_message(note, self._smtp.sender, self._to)
        for attempt in range(self._attempts):
            try:
                await asyncio.to_thread(self._send, message)
                return
            except OutboundFailed as e:
                if e.permanent or attempt + 1 >= self._attempts:
                    raise
            await asyncio.sleep(backoff(attempt, self._base_delay_s, 30.0))

    def _send(self, message: EmailMessage) -> None:
        s = self._smtp
        where = f"smtp {s.host}:{s.port}"
        try:
            context = ssl.create_default_context(cafile=s.ca_file)
            client: smtplib.SMTP
            if s.tls == "ssl":
                client = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=context)
            else:
                client = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
            with client:
                if s.tls == "starttls":
                    client.starttls(context=context)
                if s.username is not None and s.password is not None:
                    client.login(s.username, s.password)
                client.send_message(message)
        except smtplib.SMTPResponseException as e:
            # 5xx: the server refuses (bad login, unknown recipient); 4xx: try again later.
            raw = e.smtp_error
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            reason = f"{where} answered {e.smtp_code}: {_one_line(text, 200)}"
            raise OutboundFailed(reason, permanent=e.smtp_code >= 500) from None
        except smtplib.SMTPRecipientsRefused as e:
            codes = sorted({code for code, _ in e.recipients.values()})
            reason = f"{where} refused the recipients (codes {codes})"
            raise OutboundFailed(reason, permanent=min(codes) >= 500) from None
        except (smtplib.SMTPException, OSError) as e:
            reason = f"{where}: {type(e).__name__}: {_one_line(str(e), 200)}"
            raise OutboundFailed(reason) from None


def channel_from_spec(
    spec: Mapping[str, Any], *, smtp: SmtpSettings | None, policy: OutboundPolicy
) -> Channel:
    """`{"type": "slack", "url"}` | `{"type": "webhook", "url", "secret"?}` |
    `{"type": "email", "to": [...]}` (a `name` key is allowed as a label) → its channel;
    ValueError saying what is wrong (secrets and URL paths are never echoed)."""
    if not isinstance(spec, Mapping):
        raise ValueError("a channel is an object with a type: slack, webhook or email")
    kind = spec.get("type")
    allowed = {"slack": {"url"}, "webhook": {"url", "secret"}, "email": {"to"}}
    if kind not in allowed:
        raise ValueError(f"channel type must be slack, webhook or email, got {str(kind)[:40]!r}")
    unknown = sorted(set(spec) - allowed[kind] - {"type", "name"})
    if unknown:
        raise ValueError(f"unknown {kind} channel key(s): {', '.join(map(str, unknown))[:120]}")
    if kind == "email":
        to = spec.get("to")
        to = [to] if isinstance(to, str) else to
        if not isinstance(to, list) or not to or not all(isinstance(a, str) for a in to):
            raise ValueError("an email channel needs `to`: a list of one or more addresses")
        if smtp is None:
            raise ValueError(
                "email channels need an SMTP server (notifications.smtp in the config)"
            )
        return EmailChannel(smtp, to)
    url = spec.get("url")
    if not isinstance(url, str) or not url:
        raise ValueError(f"a {kind} channel needs `url`")
    if kind == "slack":
        return SlackChannel(url, policy)
    secret = spec.get("secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ValueError("a webhook channel's `secret` is a non-empty string (or left out)")
    return WebhookChannel(url, secret, policy)


async def check_channel(
    spec: Mapping[str, Any], *, smtp: SmtpSettings | None, policy: OutboundPolicy
) -> None:
    """A channel spec a user gives, checked as it is created: `channel_from_spec`'s checks, and
    for a Slack or webhook channel the URL's host as a delivery will judge it
    (`check_destination`: a name that resolves to loopback is refused now, not at the first
    alert). ValueError (OutboundRefused is one) saying what is wrong."""
    channel_from_spec(spec, smtp=smtp, policy=policy)
    if spec.get("type") in ("slack", "webhook"):
        await check_destination(str(spec["url"]), policy)
