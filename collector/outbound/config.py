"""The `notifications:` section of the config: the SMTP server email channels send through.

Parsed by `collector/config.py` with the rest of the file; `collector/outbound/notify.py` sends
with these settings (re-exported there as `SmtpSettings`). The password never appears in a repr
or message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from collector.configparse import ConfigIssue, bounds, parse_dataclass


@dataclass(frozen=True)
class SmtpSettings:
    """`tls`: "starttls" (port 587), "ssl" (implicit TLS, port 465) or "none" (a local relay).
    The server's certificate is verified against the system CAs, or `ca_file` when given."""

    host: str
    port: int = field(default=587, metadata=bounds(ge=1, le=65535))
    tls: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "agentledger@localhost"
    timeout_s: float = field(default=10.0, metadata=bounds(ge=0.1, le=300))
    ca_file: str | None = None  # a PEM bundle to trust instead of the system's (a private CA)

    def validate(self) -> list[ConfigIssue]:
        issues = []
        if not self.host.strip():
            issues.append(ConfigIssue("host", "must not be empty"))
        if (self.username is None) != (self.password is None):
            issues.append(ConfigIssue("password", "username and password go together"))
        if "@" not in self.sender or any(c in self.sender for c in "\r\n"):
            issues.append(ConfigIssue("sender", "expected an email address"))
        return issues


def _parse_smtp(raw: object, path: str, errors: list[ConfigIssue]) -> SmtpSettings | None:
    # `smtp: null` is "no SMTP server" (the generic parser would read it as "all defaults").
    return None if raw is None else parse_dataclass(SmtpSettings, raw, path, errors)


@dataclass(frozen=True, kw_only=True)
class NotificationsConfig:
    """Without `smtp`, email channels are refused when a rule names one."""

    smtp: SmtpSettings | None = field(default=None, metadata={"parser": _parse_smtp})


@dataclass(frozen=True)
class OutboundPolicy:
    """The YAML section `outbound:`; also what each caller passes per request."""

    allow_private: bool = False  # loopback, link-local, private, CGNAT, multicast, reserved
    # The whole request: resolve, connect, send, read the body (and every redirect hop).
    timeout_s: float = field(default=10.0, metadata=bounds(ge=0.01, le=3600))
    max_bytes: int = field(default=10 * 1024 * 1024, metadata=bounds(ge=1))  # answer size bound
    max_redirects: int = field(default=3, metadata=bounds(ge=0, le=20))  # each hop re-checked

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        if self.max_bytes < 1 or self.max_redirects < 0:
            raise ValueError("max_bytes must be >= 1 and max_redirects >= 0")
