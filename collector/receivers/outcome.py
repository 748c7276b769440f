"""The one place where pipeline and auth errors become protocol answers.

Both OTLP receivers call `classify` on whatever `consume` raised (or on an auth failure) and
render the result their own way: an HTTP status + google.rpc.Status, or a gRPC status code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from collector.api.body import PayloadTooLarge, UnsupportedMedia
from collector.auth.keys import AuthError
from collector.model import MalformedPayload, Overloaded, StoreUnavailable, TooLarge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    http_status: int
    grpc_code: grpc.StatusCode
    message: str
    retry_after_s: float | None = None  # set only for retryable outcomes


def classify(exc: BaseException, retry_after_s: float = 1.0) -> Outcome:
    if isinstance(exc, AuthError):
        return Outcome(401, grpc.StatusCode.UNAUTHENTICATED, f"{exc.code}: {exc}")
    if isinstance(exc, MalformedPayload):
        return Outcome(400, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, PayloadTooLarge | TooLarge):
        return Outcome(413, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    if isinstance(exc, UnsupportedMedia):
        return Outcome(415, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, Overloaded):
        return Outcome(503, grpc.StatusCode.UNAVAILABLE, str(exc), exc.retry_after_s)
    if isinstance(exc, StoreUnavailable):
        return Outcome(503, grpc.StatusCode.UNAVAILABLE, str(exc), retry_after_s)
    log.error("unexpected ingest error", exc_info=exc)
    return Outcome(503, grpc.StatusCode.UNAVAILABLE, "internal error; retry", retry_after_s)
