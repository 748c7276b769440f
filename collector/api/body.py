"""Reading a request body: `read_body` (Content-Encoding, the size bound after decompression)
for every HTTP route, OTLP's included, and on top of it `read_json` for every JSON route
(Content-Type, JSON, and text every store column can hold).

`collector/api/routes.py` calls `read_json` before a handler runs; anything wrong becomes an
`ApiError` (400, 413, 415 or 422 naming the field), never an exception that reaches the user as
a 500. Query strings and path parameters get the same text check through `text_problem`. The
OTLP/HTTP receiver calls `read_body` and maps its errors to OTLP answers
(`collector/receivers/outcome.py`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from collector.errors import ApiError
from collector.model import MalformedPayload

DEFAULT_LIMIT = 1024 * 1024
MAX_DEPTH = 64  # deeper than any documented body; bounds the work of every later walk
FLOAT_MAX = 1.7976931348623157e308


class PayloadTooLarge(Exception):
    """The (decompressed) request exceeds the configured maximum."""


class UnsupportedMedia(Exception):
    """A content type or content encoding we do not speak."""


async def read_body(
    request: Request, limit: int, hold: Callable[[int], None] = lambda n: None
) -> bytes:
    """The request body, decompressed, refused as soon as it passes `limit` bytes; `hold(n)`
    is told of every n bytes it keeps (and may raise to refuse the body).

    A gzip bomb is inflated only up to the limit, never in full.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds {limit}")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("gzip", "identity", "", "deflate"):
        raise UnsupportedMedia(f"unsupported Content-Encoding {encoding!r} (use gzip or none)")
    inflate = (
        zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        if encoding in ("gzip", "deflate")
        else None
    )
    out = bytearray()
    raw = 0
    async for chunk in request.stream():
        raw += len(chunk)
        if raw > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        hold(len(chunk))
        if inflate is None:
            out += chunk
            continue
        try:
            inflated = inflate.decompress(chunk, limit + 1 - len(out))
        except zlib.error as e:
            raise MalformedPayload(f"invalid {encoding} body: {e}") from e
        hold(len(inflated))
        out += inflated
        if len(out) > limit or inflate.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed request body exceeds {limit} bytes")
    if inflate is not None:
        out += inflate.flush()
        if len(out) > limit:
            raise PayloadTooLarge(f"decompressed request body exceeds {limit} bytes")
        # A stream cut short (its checksum unchecked) or with bytes after its end would
        # otherwise be decoded from what happened to arrive, and acknowledged.
        if not inflate.eof:
            raise MalformedPayload(f"truncated {encoding} body")
        if inflate.unused_data:
            raise MalformedPayload(f"unexpected data after the end of the {encoding} body")
    hold(len(out))  # the copy below
    return bytes(out)


class _OutOfRange:
    """A JSON number no float can hold (`1` and 400 zeros, `1e999`), kept to be named."""

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_int(text: str) -> int | _OutOfRange:
    # 310 digits already pass the float range; do not build huge ints only to refuse them.
    if len(text.lstrip("-")) > 309:
        return _OutOfRange(text)
    value = int(text)
    return value if abs(value) <= FLOAT_MAX else _OutOfRange(text)


def _parse_float(text: str) -> float | _OutOfRange:
    value = float(text)
    return value if abs(value) <= FLOAT_MAX else _OutOfRange(text)


def _parse_constant(text: str) -> _OutOfRange:
    return _OutOfRange(text)  # NaN, Infinity, -Infinity: not JSON, whatever Python accepts


def is_json_media(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media in ("", "application/json") or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(request: Request, limit: int = DEFAULT_LIMIT) -> Any:
    """The body as a JSON value (None when empty): 415 for a Content-Type other than JSON or
    an unknown Content-Encoding, 413 past `limit` bytes after decompression, 400 for broken
    gzip/deflate, 422 `validation_error` for text that is not JSON, nesting deeper than
    `MAX_DEPTH`, numbers beyond float range, NUL characters or lone surrogates."""
    content_type = request.headers.get("content-type")
    if not is_json_media(content_type):
        media = (content_type or "").split(";")[0].strip()
        raise ApiError(
            415, "unsupported_media_type", f"Content-Type must be application/json, got {media!r}"
        )
    try:
        raw = await read_body(request, limit)
    except PayloadTooLarge as e:
        raise ApiError(413, "payload_too_large", str(e)) from e
    except UnsupportedMedia as e:
        raise ApiError(415, "unsupported_media_type", str(e)) from e
    except MalformedPayload as e:
        raise ApiError(400, "bad_request", f"The body could not be decompressed: {e}") from e
    if not raw.strip():
        return None
    if _too_deep(raw):
        raise ApiError(
            422, "validation_error", f"Body is nested deeper than {MAX_DEPTH} levels", _body()
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(
            422, "validation_error", f"Body is not valid UTF-8 (byte {e.start})", _body()
        ) from e
    try:
        value = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except (ValueError, RecursionError) as e:
        raise ApiError(422, "validation_error", f"Body is not valid JSON: {e}", _body()) from e
    problems = value_problems(value)
    if problems:
        raise ApiError(422, "validation_error", "Invalid body", problems)
    return value


def _body() -> list[dict[str, str]]:
    return [{"field": "body", "message": "is not a JSON document this API accepts"}]


def _too_deep(raw: bytes) -> bool:
    """Nesting depth of brackets outside strings, counted without parsing (so a body of
    100,000 `[` costs one pass, not a recursion)."""
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text (NUL, a lone surrogate), or None if it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain lone surrogates (invalid Unicode)"
    return None


def value_problems(value: Any, field: str = "") -> list[dict[str, str]]:
    """Every string (keys included) and number of a parsed body that cannot be stored, with its
    path, e.g. `metadata.note` or `checkpoints[2].name`. The walk is iterative; the depth is
    already bounded."""
    out: list[dict[str, str]] = []
    stack: list[tuple[str, Any]] = [(field, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            why = text_problem(item)
            if why:
                out.append({"field": where or "body", "message": why})
        elif isinstance(item, _OutOfRange):
            out.append(
                {"field": where or "body", "message": "is a number beyond the range of a float"}
            )
        elif isinstance(item, dict):
            prefix = f"{where}." if where else ""
            for key, sub in item.items():
                why = text_problem(key)
                if why:
                    out.append({"field": where or "body", "message": f"has a key that {why}"})
                    continue
                stack.append((f"{prefix}{key}", sub))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", sub) for i, sub in enumerate(item))
    out.reverse()
    return out
