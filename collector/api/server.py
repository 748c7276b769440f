"""The HTTP listeners of the service (OTLP/HTTP and the JSON APIs, a separate API listener, the
metrics and health-check listeners): a uvicorn server on a socket bound here, without uvicorn's
own signal handling (the service owns SIGTERM and drains in order), and the `api:` section.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

from collector.configparse import ConfigIssue, endpoint_issues, split_endpoint


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGTERM and drains in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Listener:
    """One running HTTP listener and the address it is bound to (a port 0 resolved)."""

    address: str
    server: uvicorn.Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (uvicorn's graceful shutdown)."""
        self.server.should_exit = True
        await self.task


async def listen(endpoint: str, app: ASGIApp) -> Listener:
    """Bind `endpoint` (host:port, port 0 = a free one) and serve `app` on it until stopped."""
    host, port = split_endpoint(endpoint)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it: without, Nagle + delayed ACK add ~40 ms to each keep-alive
    # response that is written in more than one send.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=30,
        limit_concurrency=4096,
        http="httptools",  # the C HTTP parser (h11 is pure Python)
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return Listener(f"{host}:{sock.getsockname()[1]}", server, task)


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    """`endpoint` opens a separate listener for the JSON APIs; None serves them on the OTLP HTTP
    listener, or nowhere if that is off (an ingest-only gRPC node)."""

    endpoint: str | None = None

    def validate(self) -> list[ConfigIssue]:
        return [] if self.endpoint is None else endpoint_issues("endpoint", self.endpoint)
