"""Shared pieces of the native JSON receivers (/v1/track, /api/v1/capture-event, /api/logs):
reading a bounded JSON object body and authenticating an ingest key, with the JSON error shape.

Handlers call these first and get an `ApiError` (rendered with `collector.errors`) on failure.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from collector.auth.keys import Authenticator, AuthError
from collector.errors import ApiError
from collector.model import Principal
from collector.receivers.otlp_http import read_body
from collector.receivers.outcome import PayloadTooLarge, UnsupportedMedia

DEFAULT_LIMIT = 1024 * 1024


async def read_json_object(request: Request, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """The body as a JSON object: 413 past `limit` bytes (after gzip), 415 if it is declared as
    something other than JSON, 422 `validation_error` if it is not a JSON object."""
    media = (request.headers.get("content-type") or "application/json").split(";")[0].strip()
    if media.lower() not in ("application/json", "text/plain", ""):
        raise ApiError(
            415, "unsupported_media_type", f"Content-Type must be application/json, got {media!r}"
        )
    try:
        raw = await read_body(request, limit)
    except PayloadTooLarge as e:
        raise ApiError(413, "payload_too_large", str(e)) from e
    except UnsupportedMedia as e:
        raise ApiError(415, "unsupported_media_type", str(e)) from e
    try:
        body = json.loads(raw or b"null")
    except (ValueError, RecursionError) as e:
        raise ApiError(422, "validation_error", f"Body is not valid JSON: {e}") from e
    if not isinstance(body, dict):
        raise ApiError(422, "validation_error", "Body must be a JSON object")
    return body


def authenticate_ingest(
    auth: Authenticator, request: Request, key_header: str | None = None
) -> Principal:
    """The ingest principal from `Authorization: Bearer …`, or from `key_header` (e.g. the
    `X-Org-Id` header an MCP SDK sends) carrying the key itself."""
    header = request.headers.get("authorization")
    try:
        if not header and key_header and request.headers.get(key_header):
            return auth.authenticate_key(request.headers[key_header].strip(), "ingest")
        return auth.authenticate(header, "ingest")
    except AuthError as e:
        raise ApiError(e.status, e.code, str(e)) from e
