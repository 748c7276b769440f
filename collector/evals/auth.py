"""Who may call the logs API: the per-org workspace token (`wh-…`, the doc's token) and our keys.

The workspace token is stored hashed in `eval_workspace` (shown once by rotate-token); keys are
checked by the `Authenticator`. Each route names what it needs (`ADMITS`, the table in
docs/logs.md): the workspace token and an admin key may do everything; an ingest key sends
logs, polls their status, evaluates a rule and verifies itself; a read key makes every GET.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from starlette.requests import Request

from collector.api.apis import EVALS
from collector.api.routes import Handler, Operation
from collector.auth.keys import Authenticator, AuthError, display_prefix, hash_secret, parse_key
from collector.errors import ApiError
from collector.evals import store as ls
from collector.store.writer import Store

Need = Literal["send", "poll", "read", "admin"]
TOKEN = re.compile(r"wh-([0-9a-f]{8})_([0-9a-f]{40})")
# Which key scopes each need admits besides the workspace token (which admits all). "send":
# POST /api/logs and /api/rules/evaluate; "poll": GET /api/logs/{id}/status and /api/verify;
# "read": every other GET; "admin": every other write.
ADMITS: dict[Need, tuple[str, ...]] = {
    "send": ("ingest", "admin"),
    "poll": ("ingest", "read", "admin"),
    "read": ("read", "admin"),
    "admin": ("admin",),
}
ROTATION_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Caller:
    org: str
    label: str  # what `decidedBy` and logs show: "wh-1a2b3c4d", "al_admin_aaaa0003"
    token: str  # the rate limiter's key: one per token


class LogsAuth:
    def __init__(self, store: Store, auth: Authenticator, rotations_per_hour: int = 5) -> None:
        self._store = store
        self._auth = auth
        self._rotations_per_hour = rotations_per_hour
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, str]] = {}  # token id -> (org, secret hash)
        self.on_change: Callable[[], None] | None = None
        """Called after a workspace token is rotated (a shared store tells the other nodes)."""

    def load(self) -> None:
        rows = self._store.query(
            "SELECT token_id, org, token_hash FROM eval_workspace WHERE token_id IS NOT NULL"
        )
        with self._lock:
            self._tokens = {str(r[0]): (str(r[1]), str(r[2])) for r in rows}

    def caller(self, request: Request, need: Need) -> Caller:
        header = request.headers.get("authorization")
        token = ""
        if header:
            kind, _, token = header.strip().partition(" ")
            if kind.lower() != "bearer" or not token.strip():
                raise ApiError(401, "invalid_api_key", "Authorization must be 'Bearer <token>'")
            token = token.strip()
        else:
            token = (request.headers.get("x-api-key") or "").strip()
        if not token:
            raise ApiError(401, "missing_authorization", "Missing Authorization header")
        return self.check(token, need)

    def check(self, token: str, need: Need) -> Caller:
        m = TOKEN.fullmatch(token)
        if m is not None:
            with self._lock:
                found = self._tokens.get(m.group(1))
            expected = found[1] if found else "0" * 64
            if not hmac.compare_digest(hash_secret(m.group(2)), expected) or found is None:
                raise ApiError(401, "invalid_api_key", "Workspace token not recognised")
            return Caller(found[0], f"wh-{m.group(1)}", f"wh-{m.group(1)}")
        parsed = parse_key(token)
        if parsed is None:
            raise ApiError(401, "invalid_api_key", "Token format invalid")
        scope = parsed[0]
        try:
            principal = self._auth.authenticate_key(token, scope)
        except AuthError as e:
            raise ApiError(e.status, e.code, str(e)) from e
        if scope not in ADMITS[need]:
            allowed = " or ".join(ADMITS[need])
            raise ApiError(
                401,
                "invalid_api_key",
                f"{_article(scope)} {scope} key cannot be used here; use the workspace token "
                f"or {_article(allowed)} {allowed} key",
            )
        label = display_prefix(principal.key_id, scope)
        return Caller(principal.org, label, label)

    # -- the workspace token ---------------------------------------------------------------

    async def rotate(self, org: str, now: datetime) -> str:
        """A new workspace token (the old one stops working); 429 past the hourly limit."""
        token_id, secret = secrets.token_hex(4), secrets.token_hex(20)
        with self._lock:
            while token_id in self._tokens:
                token_id = secrets.token_hex(4)

        def write(cur: Any) -> str | None:
            row = ls.workspace_row(cur, org)
            recent = [
                t
                for t in (ls.loads(row["rotations"]) if row else None) or []
                if datetime.fromisoformat(t) > now - ROTATION_WINDOW
            ]
            if len(recent) >= self._rotations_per_hour:
                return str(min(recent))
            recent.append(now.isoformat())
            values = [token_id, hash_secret(secret), now, ls.dumps(recent), now, org]
            if row is None:
                ls.insert(cur, "eval_workspace", {"org": org, "settings": "{}", "secrets": "{}"})
            cur.execute(
                "UPDATE eval_workspace SET token_id = ?, token_hash = ?, token_created_at = ?, "
                "rotations = ?, updated_at = ? WHERE org = ?",
                values,
            )
            return None

        oldest = await self._store.acall(write)
        if oldest is not None:
            wait = datetime.fromisoformat(oldest) + ROTATION_WINDOW - now
            raise ApiError(
                429,
                "rate_limited",
                f"At most {self._rotations_per_hour} token rotations an hour",
                headers={"Retry-After": str(max(1, int(wait.total_seconds()) + 1))},
            )
        with self._lock:
            self._tokens = {k: v for k, v in self._tokens.items() if v[0] != org}
            self._tokens[token_id] = (org, hash_secret(secret))
        if self.on_change is not None:
            await asyncio.to_thread(self.on_change)
        return f"wh-{token_id}_{secret}"

    def token_preview(self, org: str) -> str | None:
        with self._lock:
            ids = [k for k, v in self._tokens.items() if v[0] == org]
        return f"wh-{ids[0]}_…" if ids else None


@dataclass(frozen=True)
class Tracira:
    """The access of one route of this API (`collector/api/routes.py`): `Authorization: Bearer`
    or `x-api-key`, the workspace token or a key `ADMITS[need]` lets in."""

    auth: LogsAuth
    need: Need
    security: list[dict[str, list[str]]] = field(
        default_factory=lambda: [{"bearer": []}, {"apiKey": []}]
    )

    @property
    def scopes(self) -> tuple[str, ...]:
        return ("workspace token", *ADMITS[self.need])

    def __call__(self, request: Request) -> Caller:
        return self.auth.caller(request, self.need)


def operation(
    auth: LogsAuth, method: str, path: str, handler: Handler, *, need: Need, **more: Any
) -> Operation:
    """One route of this API, open to the tokens and keys `need` admits."""
    return Operation(EVALS, method, path, handler, access=Tracira(auth, need), **more)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def now_utc() -> datetime:
    return datetime.now(UTC)
