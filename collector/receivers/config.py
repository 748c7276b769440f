"""The `receivers:` section of the configuration (OTLP over gRPC and HTTP) and endpoint parsing.

Parsed by `collector/config.py` as part of `Config`; the service opens listeners from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from collector.configparse import ConfigIssue, bounds, endpoint_issues


@dataclass(frozen=True, kw_only=True)
class GrpcConfig:
    endpoint: str = "127.0.0.1:4317"
    max_recv_msg_size_mib: int = field(default=64, metadata=bounds(ge=1))

    def validate(self) -> list[ConfigIssue]:
        return endpoint_issues("endpoint", self.endpoint)


@dataclass(frozen=True, kw_only=True)
class CorsConfig:
    """The Collector's `cors:` of the OTLP/HTTP receiver, so that browser SDKs can export:
    `allowed_origins` (exact, or with `*` wildcards; `*` alone is any origin), request headers
    beyond the CORS safelist (`Authorization` for our keys), and how long a browser may cache a
    preflight answer (`max_age`, seconds; 0 sends none)."""

    allowed_origins: list[str] = field(default_factory=list)
    allowed_headers: list[str] = field(default_factory=list)
    max_age: int = field(default=0, metadata=bounds(ge=0))

    def exact_origins(self) -> list[str]:
        return [o for o in self.allowed_origins if "*" not in o or o == "*"]

    def origin_pattern(self) -> str | None:
        """One regular expression for the wildcard origins (`https://*.example.com`)."""
        wild = [o for o in self.allowed_origins if "*" in o and o != "*"]
        if not wild:
            return None
        return "|".join(".*".join(re.escape(part) for part in o.split("*")) for o in wild)


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    endpoint: str = "127.0.0.1:4318"
    max_request_body_size_mib: int = field(default=64, metadata=bounds(ge=1))
    cors: CorsConfig = field(default_factory=CorsConfig)  # no origins: no CORS

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
