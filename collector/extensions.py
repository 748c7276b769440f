"""The `extensions:` section of an OpenTelemetry Collector config, so that a Collector config
loads here: `health_check` is served (its endpoint answers its `path` and `/health` with the
service's health), every other extension is accepted with a notice that it does nothing here.

Parsed by `collector/config.py`; the service opens a listener for each `health_check` that
`service.extensions` lists (the Collector starts only the extensions listed there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from collector.configparse import (
    INVALID,
    ConfigIssue,
    describe,
    endpoint_issues,
    join,
    parse_dataclass,
    suggest,
)

_ID = re.compile(r"[a-z][a-z0-9_]*(?:/[A-Za-z0-9_.\-]+)?")
SERVED = ("health_check",)


@dataclass(frozen=True, kw_only=True)
class HealthCheckConfig:
    """The Collector's health_check: `endpoint` (its default, on loopback) answers GET `path` and
    GET /health with 200 `{"status": "ok"}` while the service is up, 503 otherwise;
    `response_body` replaces those bodies (`healthy`, `unhealthy`)."""

    endpoint: str = "127.0.0.1:13133"
    path: str = "/"
    response_body: dict[str, str] | None = None
    check_collector_pipeline: dict[str, Any] | None = None
    """Deprecated in the Collector; accepted and ignored (the health is the whole service's)."""

    def validate(self) -> list[ConfigIssue]:
        issues = endpoint_issues("endpoint", self.endpoint)
        if not self.path.startswith("/"):
            issues.append(ConfigIssue("path", f"must start with '/', got {self.path!r}"))
        unknown = set(self.response_body or {}) - {"healthy", "unhealthy"}
        if unknown:
            message = f"expected keys healthy and unhealthy, got {', '.join(sorted(unknown))}"
            issues.append(ConfigIssue("response_body", message))
        return issues


@dataclass(frozen=True)
class ExtensionsConfig:
    """Declared extensions by id (`type` or `type/name`): health checks, and the inert rest."""

    health_checks: dict[str, HealthCheckConfig] = field(default_factory=dict)
    inert: tuple[str, ...] = ()

    def __contains__(self, extension_id: object) -> bool:
        return extension_id in self.health_checks or extension_id in self.inert


def parse_extensions(raw: object, path: str, errors: list[ConfigIssue]) -> object:
    if raw is None:
        return ExtensionsConfig()
    if not isinstance(raw, dict):
        errors.append(
            ConfigIssue(path, f"expected a mapping of extension ids, got {describe(raw)}")
        )
        return INVALID
    checks: dict[str, HealthCheckConfig] = {}
    inert: list[str] = []
    for eid, settings in raw.items():
        where = join(path, str(eid))
        if not isinstance(eid, str) or not _ID.fullmatch(eid):
            errors.append(ConfigIssue(where, "invalid extension id (expected type or type/name)"))
            continue
        kind = eid.split("/", 1)[0]
        if kind == "health_check":
            checks[eid] = parse_dataclass(HealthCheckConfig, settings, where, errors)
            continue
        near = suggest(kind, list(SERVED))
        if near:  # a typo of one we serve must not silently turn into a no-op
            errors.append(ConfigIssue(where, f"unknown extension {kind!r}; did you mean {near!r}?"))
            continue
        inert.append(eid)
    return ExtensionsConfig(checks, tuple(inert))
