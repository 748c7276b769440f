"""Web UI sessions: the sealed session cookie, its CSRF token, sign-out, and cookie attributes.

A session holds the keys its user signed in with, sealed (AES-256-GCM, `collector/secretbox.py`)
into an HttpOnly, SameSite=Strict cookie: the browser never holds a key in clear and cannot alter
the session. Each request re-checks the keys (`collector/ui/access.py`), so revoking a key ends
every session that holds it. Pages put `UiSession.csrf` into each form that writes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from collector.secretbox import SecretBox

COOKIE = "al_session"
SIGN_IN_COOKIE = "al_signin"  # the sign-in form's CSRF token (no session exists yet)
COOKIE_PATH = "/ui"
# Sealed with the same box as stored secrets: this label keeps a sealed secret from ever
# opening as a session (and the reverse).
_LABEL = "agentledger-ui-session-v1\n"
MAX_KEYS = 4  # one of each kind a session can use: read, admin, workspace token (+ spare)
_MAX_ENDED = 100_000


@dataclass(frozen=True)
class UiSession:
    sid: str
    keys: tuple[str, ...] = field(repr=False)  # never in a repr, a log line or a page
    csrf: str = field(repr=False)
    expires_at: float  # epoch seconds


class Sessions:
    """Issues and opens session cookies; remembers signed-out sessions until they expire."""

    def __init__(
        self, box: SecretBox, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._box = box
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._ended: dict[str, float] = {}  # sid -> its expiry

    def issue(
        self, keys: tuple[str, ...], previous: UiSession | None = None
    ) -> tuple[str, UiSession]:
        """A new session of `keys` (its cookie value and itself). Each sign-in gets a fresh id
        and CSRF token, so nothing an attacker planted before survives it."""
        if previous is not None:
            self.end(previous)
        session = UiSession(
            sid=secrets.token_hex(16),
            keys=keys[:MAX_KEYS],
            csrf=secrets.token_urlsafe(32),
            expires_at=self._clock() + self.ttl_s,
        )
        payload: dict[str, Any] = {"i": session.sid, "k": list(session.keys), "c": session.csrf}
        payload["x"] = session.expires_at
        sealed = self._box.seal(_LABEL + json.dumps(payload, separators=(",", ":")))
        return _to_cookie(sealed), session

    def open(self, cookie: str | None) -> UiSession | None:
        """The session of a cookie; None when it is missing, altered, of another key, expired
        or signed out."""
        if not cookie or len(cookie) > 4096:
            return None
        try:
            plain = self._box.unseal(_from_cookie(cookie))
            if not plain.startswith(_LABEL):
                return None
            data = json.loads(plain[len(_LABEL) :])
            session = UiSession(
                sid=str(data["i"]),
                keys=tuple(str(k) for k in data["k"]),
                csrf=str(data["c"]),
                expires_at=float(data["x"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires_at <= self._clock():
            return None
        with self._lock:
            if session.sid in self._ended:
                return None
        return session

    def end(self, session: UiSession) -> None:
        """Sign out: this session's cookie no longer opens (in this process; the cookie is also
        deleted, and it expires by itself)."""
        now = self._clock()
        with self._lock:
            if len(self._ended) >= _MAX_ENDED:
                self._ended = {s: t for s, t in self._ended.items() if t > now}
            self._ended[session.sid] = session.expires_at


def same_token(expected: str, given: str | None) -> bool:
    """A CSRF check in constant time."""
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


def is_secure(request: Request) -> bool:
    """Whether the browser reached us over TLS: directly, or through a proxy that says so."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=is_secure(request),
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    set_cookie(response, request, name, "", 0)


def _to_cookie(sealed: str) -> str:
    # base64url without padding: a cookie value needs no quoting then.
    raw = base64.b64decode(sealed.removeprefix("v1:"))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _from_cookie(value: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError("not a session cookie") from e
    return "v1:" + base64.b64encode(raw).decode()
