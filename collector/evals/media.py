"""Attachments of logs: fetched (`url`, through the SSRF guard) or decoded (`upload`, base64),
stored durably under the media directory, and served by GET /api/media/{key} as a redirect to a
short-lived signed URL.

A key is `<org>/<logId>/<n>-<name>`; a request only ever reaches a file under the media root
and of the caller's own org (anything else is a 404).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import mimetypes
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from collector.api import schema as sc
from collector.api.apis import EVALS
from collector.api.params import Param
from collector.api.routes import Call, Operation
from collector.errors import ApiError
from collector.evals.auth import LogsAuth, Tracira
from collector.outbound import client as outbound
from processors.redact.rules import Redactor

SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DATA_URL = re.compile(r"data:([\w.+/-]+)?(;[\w=-]+)*;base64,", re.I)
_INLINE_RISKY = ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml")


class Media:
    def __init__(
        self,
        root: Path,
        auth: LogsAuth,
        policy: outbound.OutboundPolicy,
        max_bytes: int,
        url_ttl_s: int = 300,
    ) -> None:
        self._root = root
        self._auth = auth
        self._policy = policy
        self._max = max_bytes
        self._ttl = url_ttl_s
        self._key = b""

    def open(self) -> None:
        """Create the media root and its URL-signing key (0600, kept across restarts)."""
        self._root.mkdir(parents=True, exist_ok=True)
        path = self._root / ".signing.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        self._key = path.read_bytes()

    def operations(self) -> list[Operation]:
        return [
            Operation(
                EVALS,
                "GET",
                "/api/media/{key:path}",
                self._get,
                "A redirect to a short-lived signed URL of an attachment (or, signed, the file)",
                _SignedOrRead(self._auth),
                params=(
                    Param("download", sc.enum(("1",)), "1: as an attachment"),
                    Param("expires", sc.string(20), "of a signed URL"),
                    Param("signature", sc.string(128), "of a signed URL"),
                ),
                ok=302,
                media="",
                errors={403: "the signed URL is invalid or has expired"},
            )
        ]

    # -- ingest ----------------------------------------------------------------------------

    async def store(
        self, org: str, log_id: str, items: list[dict[str, Any]], redactor: Redactor | None
    ) -> list[dict[str, Any]]:
        """Fetch or decode each attachment and write it; 422 naming the one that failed."""
        fetched: list[tuple[dict[str, Any], bytes, str]] = []
        for i, item in enumerate(items):
            data, kind = await self._content(i, item)
            if redactor is not None and _is_text(kind):
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    pass
                else:
                    data = redactor.text(text, field=f"attachments[{i}]").encode()
            fetched.append((item, data, kind))
        out = []
        for i, (item, data, kind) in enumerate(fetched):
            name = _safe_name(item.get("name") or _name_of(item.get("url")) or f"file{i}")
            key = f"{org}/{log_id}/{i}-{name}"
            await asyncio.to_thread(self._write, key, data)
            out.append(
                {
                    "key": key,
                    "name": item.get("name") or name,
                    "contentType": kind,
                    "size": len(data),
                    "source": "url" if item.get("url") else "upload",
                    "sourceUrl": item.get("url"),
                }
            )
        return out

    async def _content(self, i: int, item: dict[str, Any]) -> tuple[bytes, str]:
        where = f"attachments[{i}]"
        if item.get("url"):
            policy = outbound.OutboundPolicy(
                allow_private=self._policy.allow_private,
                timeout_s=self._policy.timeout_s,
                max_bytes=self._max,
                max_redirects=self._policy.max_redirects,
            )
            try:
                data, kind = await outbound.fetch(item["url"], policy)
            except outbound.OutboundRefused as e:
                reason = str(e) if str(e).startswith("refused") else f"refused: {e}"
                raise _invalid(f"{where}.url", reason) from e
            except outbound.OutboundFailed as e:
                raise _invalid(f"{where}.url", f"could not be fetched: {e}") from e
            return data, item.get("contentType") or kind.split(";")[0] or "application/octet-stream"
        text = str(item["upload"]).strip()
        m = _DATA_URL.match(text)
        declared: str | None = item.get("contentType") or (m.group(1) if m and m.group(1) else None)
        if m:
            text = text[m.end() :]
        if len(text) > (self._max * 4) // 3 + 8:
            raise _invalid(f"{where}.upload", f"is larger than {self._max // (1024 * 1024)} MB")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise _invalid(f"{where}.upload", "is not valid base64") from e
        if len(data) > self._max:
            raise _invalid(f"{where}.upload", f"is larger than {self._max // (1024 * 1024)} MB")
        guessed = mimetypes.guess_type(item.get("name") or "")[0]
        return data, declared or guessed or "application/octet-stream"

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def delete(self, org: str, log_ids: list[str]) -> None:
        for log_id in log_ids:
            if SEGMENT.fullmatch(org) and SEGMENT.fullmatch(log_id):
                shutil.rmtree(self._root / org / log_id, ignore_errors=True)

    # -- serving ---------------------------------------------------------------------------

    def _path(self, key: str) -> Path | None:
        parts = key.split("/")
        if len(parts) != 3 or not all(SEGMENT.fullmatch(p) for p in parts):
            return None
        path = (self._root / parts[0] / parts[1] / parts[2]).resolve()
        root = self._root.resolve()
        return path if path.is_relative_to(root) and path != root else None

    def _signature(self, key: str, expires: int, download: str) -> str:
        message = f"{key}\n{expires}\n{download}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    async def _get(self, call: Call) -> Response:
        key = call.path["key"]
        q = call.query.query
        download = "1" if q.get("download") == "1" else ""
        if "signature" in q:
            expires = q.get("expires", "")
            # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
            good = (
                expires.isascii()
                and expires.isdigit()
                and hmac.compare_digest(
                    self._signature(key, int(expires), download).encode(), q["signature"].encode()
                )
            )
            if not good or int(expires) < time.time():
                raise ApiError(403, "forbidden", "The media link is invalid or has expired")
            return self._file(key, download == "1")
        caller = call.caller
        path = self._path(key)
        if path is None or key.split("/", 1)[0] != caller.org or not path.is_file():
            raise ApiError(404, "not_found", "Media not found")
        until = int(time.time()) + self._ttl
        query = {"expires": str(until), "signature": self._signature(key, until, download)}
        if download:
            query["download"] = "1"
        return RedirectResponse(f"/api/media/{quote(key)}?{urlencode(query)}", status_code=302)

    def _file(self, key: str, download: bool) -> Response:
        path = self._path(key)
        if path is None or not path.is_file():
            raise ApiError(404, "not_found", "Media not found")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        attach = download or kind in _INLINE_RISKY
        disposition = "attachment" if attach else "inline"
        return FileResponse(
            path,
            media_type=kind,
            content_disposition_type=disposition,
            filename=path.name.split("-", 1)[-1],
            headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"},
        )


class _SignedOrRead(Tracira):
    """A signed URL is its own credential; without a signature, a read token's access."""

    def __init__(self, auth: LogsAuth) -> None:
        super().__init__(auth, "read")

    def __call__(self, request: Request) -> Any:
        if "signature" in request.query_params:
            return None
        return super().__call__(request)


def _invalid(name: str, message: str) -> ApiError:
    return ApiError(
        422, "validation_error", "Invalid attachment", [{"field": name, "message": message}]
    )


def _is_text(kind: str) -> bool:
    return kind.startswith("text/") or kind in ("application/json", "application/xml")


def _name_of(url: str | None) -> str | None:
    if not url:
        return None
    tail = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    return tail or None


def _safe_name(name: str) -> str:
    cleaned = _UNSAFE.sub("_", name).strip("._") or "file"
    return cleaned[-100:]
