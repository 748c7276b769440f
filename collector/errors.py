"""The JSON error shape every non-OTLP API answers with: {"error", "code", "details"}.

Handlers raise `ApiError` (or return `error_response`); the Trakr dashboard API doc documents the
shape and the seed docs name the codes.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details
        self.headers = headers or {}


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": message, "code": code}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def from_api_error(e: ApiError) -> JSONResponse:
    return error_response(e.status, e.code, str(e), e.details, e.headers)
