"""The HTTP server of the JSON APIs and OTLP/HTTP: a uvicorn server on a socket the service binds,
without uvicorn's own signal handling (the service owns SIGTERM and drains in order).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from collector.configparse import (
    ConfigIssue,
)
from collector.receivers.config import (
    endpoint_issues,
)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGTERM and drains in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    """`endpoint` opens a separate listener for the JSON APIs; None serves them on the OTLP HTTP
    listener, or nowhere if that is off (an ingest-only gRPC node)."""

    endpoint: str | None = None

    def validate(self) -> list[ConfigIssue]:
        return [] if self.endpoint is None else endpoint_issues("endpoint", self.endpoint)
