"""OTLP/HTTP receiver: POST /v1/traces, /v1/logs, /v1/metrics in protobuf or JSON, gzip or not.

Requests come from any OTel SDK's HTTP exporter; the handler bounds the body (after
decompression), authenticates, calls `consume`, and answers in the request's own encoding.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.admission import Admission
from collector.api.body import UnsupportedMedia, read_body
from collector.auth.keys import Authenticator
from collector.model import Accepted, Consume, IngestRequest, Signal
from collector.receivers.outcome import classify

PATHS: dict[str, Signal] = {
    "/v1/traces": Signal.TRACES,
    "/v1/logs": Signal.LOGS,
    "/v1/metrics": Signal.METRICS,
}
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def success_response(signal: Signal, result: Accepted) -> Message:
    """The Export*ServiceResponse, with partial_success when some items were rejected."""
    if signal is Signal.TRACES:
        trace_resp = ExportTraceServiceResponse()
        if result.rejected:
            trace_resp.partial_success.rejected_spans = result.rejected
            trace_resp.partial_success.error_message = result.rejection_message or (
                f"{result.rejected} spans had no valid trace_id/span_id"
            )
        return trace_resp
    if signal is Signal.LOGS:
        logs_resp = ExportLogsServiceResponse()
        if result.rejected:
            logs_resp.partial_success.rejected_log_records = result.rejected
            logs_resp.partial_success.error_message = result.rejection_message
        return logs_resp
    metrics_resp = ExportMetricsServiceResponse()
    if result.rejected:
        metrics_resp.partial_success.rejected_data_points = result.rejected
        metrics_resp.partial_success.error_message = result.rejection_message
    return metrics_resp


def _render(message: Message, encoding: str) -> tuple[bytes, str]:
    if encoding == "json":
        return json_format.MessageToJson(message, indent=None).encode(), JSON
    return message.SerializeToString(), PROTOBUF


def _encoding_of(content_type: str | None) -> str | None:
    media = (content_type or "").split(";")[0].strip().lower()
    if media == PROTOBUF:
        return "protobuf"
    if media == JSON:
        return "json"
    return None


class OtlpHttpReceiver:
    def __init__(
        self,
        consume: Consume,
        auth: Authenticator,
        max_body_bytes: int,
        retry_after_s: float = 1.0,
        admission: Admission | None = None,
    ) -> None:
        self._consume = consume
        self._auth = auth
        self._limit = max_body_bytes
        self._retry_after_s = retry_after_s
        self._admission = admission

    def routes(self) -> list[Route]:
        return [Route(path, self._handle, methods=["POST"]) for path in PATHS]

    async def _handle(self, request: Request) -> Response:
        signal = PATHS[request.url.path]
        encoding = _encoding_of(request.headers.get("content-type")) or "protobuf"
        try:
            if _encoding_of(request.headers.get("content-type")) is None:
                raise UnsupportedMedia(
                    f"unsupported Content-Type {request.headers.get('content-type')!r}; "
                    f"use {PROTOBUF} or {JSON}"
                )
            principal = self._auth.authenticate(request.headers.get("authorization"), "ingest")
            if self._admission is None:
                payload = await read_body(request, self._limit)
            else:
                labels = {"transport": "http", "signal": signal.name.lower()}
                reading = self._admission.reading(labels)
                try:
                    payload = await read_body(request, self._limit, reading.grow)
                finally:
                    # consume() admits the request before its first await: no gap between.
                    reading.release()
            result = await self._consume(
                IngestRequest(principal, signal, payload, encoding, "http")
            )
        except Exception as e:
            return self._error(e, encoding)
        body, media = _render(success_response(signal, result), encoding)
        return Response(body, 200, media_type=media)

    def _error(self, exc: BaseException, encoding: str) -> Response:
        outcome = classify(exc, self._retry_after_s)
        status = status_pb2.Status(code=outcome.grpc_code.value[0], message=outcome.message)
        body, media = _render(status, encoding)
        headers: dict[str, Any] = {}
        if outcome.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, round(outcome.retry_after_s)))
        return Response(body, outcome.http_status, media_type=media, headers=headers)
