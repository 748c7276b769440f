"""OTLP clients of the forward exporter: gRPC (`otlp:`) and HTTP/protobuf (`otlphttp:`).

The sender thread of `exporters/otlp/forward.py` hands each rebuilt Export*ServiceRequest to `send`;
the answer is sent, retry later (`Retryable`) or never (`Permanent`), as the OTLP spec says.
"""

from __future__ import annotations

import gzip
import http.client
import ssl
import urllib.parse
from pathlib import Path
from typing import Protocol

import grpc
from google.protobuf.message import Message

from collector.model import Signal

_SERVICES = {
    Signal.TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    Signal.LOGS: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    Signal.METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}
_PATHS = {Signal.TRACES: "/v1/traces", Signal.LOGS: "/v1/logs", Signal.METRICS: "/v1/metrics"}
# OTLP: these are transient. Auth failures are retried as well (a fixed key or target then
# delivers the queue) rather than dropping everything queued behind a configuration mistake.
_RETRY_GRPC = {
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}  # fmt: skip
_RETRY_HTTP = {401, 403, 408, 429}


class Retryable(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Permanent(Exception):
    """The target refused the data for good (malformed, too large): drop it, count it."""


class Sender(Protocol):
    def send(self, signal: Signal, request: Message) -> None: ...

    def close(self) -> None: ...


class GrpcSender:
    """`endpoint` is host:port (or http://, https:// to choose plaintext or TLS)."""

    def __init__(
        self,
        endpoint: str,
        *,
        headers: dict[str, str],
        gzip_on: bool,
        timeout_s: float,
        insecure: bool,
        ca_file: str | None,
    ) -> None:
        target = endpoint
        if endpoint.startswith("http://"):
            target, insecure = endpoint[7:], True
        elif endpoint.startswith("https://"):
            target, insecure = endpoint[8:], False
        compression = grpc.Compression.Gzip if gzip_on else grpc.Compression.NoCompression
        if insecure:
            self._channel = grpc.insecure_channel(target, compression=compression)
        else:
            root = Path(ca_file).read_bytes() if ca_file else None
            creds = grpc.ssl_channel_credentials(root_certificates=root)
            self._channel = grpc.secure_channel(target, creds, compression=compression)
        self._metadata = tuple((k.lower(), v) for k, v in headers.items())
        self._timeout = timeout_s
        self._calls = {
            s: self._channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            for s, path in _SERVICES.items()
        }

    def send(self, signal: Signal, request: Message) -> None:
        try:
            self._calls[signal](
                request.SerializeToString(), timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = e.details() if isinstance(e, grpc.Call) else str(e)
            message = f"gRPC {code.name if code else '?'}: {(details or '')[:200]}"
            if code in _RETRY_GRPC:
                raise Retryable(message) from None
            raise Permanent(message) from None

    def close(self) -> None:
        self._channel.close()


class HttpSender:
    """`endpoint` is the base URL (http://host:4318); `/v1/<signal>` is appended unless a
    signal's own URL is given in `urls`."""

    def __init__(
        self,
        endpoint: str,
        *,
        urls: dict[Signal, str | None],
        headers: dict[str, str],
        gzip_on: bool,
        timeout_s: float,
        insecure_skip_verify: bool,
        ca_file: str | None,
    ) -> None:
        base = endpoint.rstrip("/")
        self._urls = {s: urllib.parse.urlsplit(urls.get(s) or base + p) for s, p in _PATHS.items()}
        self._headers = {**headers, "Content-Type": "application/x-protobuf"}
        if gzip_on:
            self._headers["Content-Encoding"] = "gzip"
        self._gzip = gzip_on
        self._timeout = timeout_s
        self._context = ssl.create_default_context(cafile=ca_file)
        if insecure_skip_verify:
            self._context.check_hostname = False
            self._context.verify_mode = ssl.CERT_NONE
        self._connections: dict[str, http.client.HTTPConnection] = {}

    def send(self, signal: Signal, request: Message) -> None:
        url = self._urls[signal]
        body = request.SerializeToString()
        if self._gzip:
            body = gzip.compress(body, compresslevel=5)
        path = url.path + (f"?{url.query}" if url.query else "")
        try:
            conn = self._connection(url)
            conn.request("POST", path, body=body, headers=self._headers)
            response = conn.getresponse()
            status, text = response.status, response.read()[:200]
            retry_after = response.getheader("Retry-After")
        except (OSError, http.client.HTTPException) as e:
            self._connections.pop(url.netloc, None)
            raise Retryable(f"HTTP {url.netloc}: {e}") from None
        if 200 <= status < 300:
            return
        message = f"HTTP {status}: {text.decode(errors='replace')}"
        if status in _RETRY_HTTP or status >= 500:
            raise Retryable(message, _seconds(retry_after))
        raise Permanent(message)

    def _connection(self, url: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        conn = self._connections.get(url.netloc)
        if conn is None:
            if url.scheme == "https":
                conn = http.client.HTTPSConnection(
                    url.netloc, timeout=self._timeout, context=self._context
                )
            else:
                conn = http.client.HTTPConnection(url.netloc, timeout=self._timeout)
            self._connections[url.netloc] = conn
        return conn

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()


def _seconds(header: str | None) -> float | None:
    try:
        return float(header) if header else None
    except ValueError:
        return None
