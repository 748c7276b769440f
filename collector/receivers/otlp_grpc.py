"""OTLP/gRPC receiver: TraceService, LogsService and MetricsService Export, plus health.

Any OTel SDK's gRPC exporter talks to it; payloads reach `consume` as raw bytes (no parse here:
the decode path parses once), and failures carry RetryInfo so SDKs back off as asked.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from collector.auth.keys import Authenticator
from collector.model import Consume, IngestRequest, Signal
from collector.receivers.otlp_http import success_response
from collector.receivers.outcome import classify

log = logging.getLogger(__name__)

SERVICES: dict[str, Signal] = {
    "opentelemetry.proto.collector.trace.v1.TraceService": Signal.TRACES,
    "opentelemetry.proto.collector.logs.v1.LogsService": Signal.LOGS,
    "opentelemetry.proto.collector.metrics.v1.MetricsService": Signal.METRICS,
}


class OtlpGrpcReceiver:
    def __init__(
        self,
        consume: Consume,
        auth: Authenticator,
        endpoint: str,
        max_message_bytes: int,
        retry_after_s: float = 1.0,
    ) -> None:
        self._consume = consume
        self._auth = auth
        self._endpoint = endpoint
        self._max = max_message_bytes
        self._retry_after_s = retry_after_s
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self.port: int = 0

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ],
        )
        handlers = []
        for service, signal in SERVICES.items():
            method = grpc.unary_unary_rpc_method_handler(
                self._handler(signal),
                request_deserializer=None,  # raw bytes: decoded once, in the decode path
                response_serializer=lambda m: m.SerializeToString(),
            )
            handlers.append(grpc.method_handlers_generic_handler(service, {"Export": method}))
        server.add_generic_rpc_handlers(handlers)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self.port = server.add_insecure_port(self._endpoint)
        if self.port == 0:
            raise OSError(f"cannot listen for gRPC on {self._endpoint}")
        await server.start()
        self._server = server

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICES):
            await self._health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        """Stop taking new calls and let in-flight ones finish. Safe without start and twice."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None

    def _handler(self, signal: Signal) -> Any:
        async def export(payload: bytes, context: grpc.aio.ServicerContext) -> Any:
            metadata = dict(context.invocation_metadata() or ())
            try:
                principal = self._auth.authenticate(_str(metadata.get("authorization")), "ingest")
                result = await self._consume(
                    IngestRequest(principal, signal, payload, "protobuf", "grpc")
                )
            except Exception as e:
                outcome = classify(e, self._retry_after_s)
            else:
                return success_response(signal, result)
            # Aborting raises: out of the except block, and without the payload, so the error
            # and its traceback do not keep a request's bytes alive until a full GC pass.
            del payload
            if outcome.retry_after_s is not None:
                context.set_trailing_metadata(
                    (("grpc-status-details-bin", _retry_status(outcome)),)
                )
            await context.abort(outcome.grpc_code, outcome.message)

        return export


def _str(v: Any) -> str | None:
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


def _retry_status(outcome: Any) -> bytes:
    """google.rpc.Status carrying RetryInfo, which OTel SDK exporters read for their backoff."""
    info = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=int(max(1, outcome.retry_after_s)))
    )
    status = status_pb2.Status(code=outcome.grpc_code.value[0], message=outcome.message)
    status.details.add().Pack(info)
    data: bytes = status.SerializeToString()
    return data
