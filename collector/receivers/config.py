"""The `receivers:` section of the configuration (OTLP over gRPC and HTTP) and endpoint parsing.

Parsed by `collector/config.py` as part of `Config`; the service opens listeners from it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from collector.configparse import ConfigIssue, bounds, describe

_ENDPOINT = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[A-Za-z0-9._-]+)):(?P<port>[0-9]{1,5})")


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host without brackets, port); ValueError says what's wrong."""
    m = _ENDPOINT.fullmatch(endpoint)
    if m is None:
        raise ValueError(f"expected host:port (IPv6 as [::1]:4317), got {describe(endpoint)}")
    if m["v6"] is not None:
        try:
            ipaddress.IPv6Address(m["v6"])
        except ValueError:
            raise ValueError(f"{m['v6']!r} in brackets is not an IPv6 address") from None
    port = int(m["port"])
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0-65535; 0 picks a free port)")
    return m["v6"] or m["host"], port


def endpoint_issues(name: str, endpoint: str) -> list[ConfigIssue]:
    try:
        split_endpoint(endpoint)
    except ValueError as e:
        return [ConfigIssue(name, str(e))]
    return []


@dataclass(frozen=True, kw_only=True)
class GrpcConfig:
    endpoint: str = "127.0.0.1:4317"
    max_recv_msg_size_mib: int = field(default=64, metadata=bounds(ge=1))

    def validate(self) -> list[ConfigIssue]:
        return endpoint_issues("endpoint", self.endpoint)


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    endpoint: str = "127.0.0.1:4318"
    max_request_body_size_mib: int = field(default=64, metadata=bounds(ge=1))

    def validate(self) -> list[ConfigIssue]:
        return endpoint_issues("endpoint", self.endpoint)


@dataclass(frozen=True, kw_only=True)
class OtlpProtocols:
    """As in the OTel Collector: `grpc:` with no value enables gRPC with defaults, and a protocol
    left out of a `protocols:` section is off."""

    grpc: GrpcConfig | None = None
    http: HttpConfig | None = None

    def validate(self) -> list[str]:
        return [] if self.grpc or self.http else ["enable at least one of grpc, http"]


@dataclass(frozen=True, kw_only=True)
class OtlpReceiverConfig:
    protocols: OtlpProtocols = field(
        default_factory=lambda: OtlpProtocols(grpc=GrpcConfig(), http=HttpConfig())
    )


@dataclass(frozen=True, kw_only=True)
class ReceiversConfig:
    """A receiver left out of a `receivers:` section is off; with no section, OTLP is on."""

    otlp: OtlpReceiverConfig | None = None
