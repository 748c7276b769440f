"""API keys: their format, minting, hashing, lookup and revocation, and request authentication.

Keys live hashed in the store's `api_keys` table (or in the config, hashed in memory only);
receivers and API handlers call `Authenticator.authenticate` with the Authorization header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from collector.model import KEY_PATTERN, KIND_OF_SCOPE, SCOPE_OF_KIND, SCOPES, Principal, Scope
from collector.store.writer import Store

PREFIX_OF_SCOPE: dict[Scope, str] = {scope: f"al_{kind}_" for scope, kind in KIND_OF_SCOPE.items()}


class AuthError(Exception):
    """Authentication failed; `code` is the machine code of the seed docs' error tables."""

    def __init__(self, code: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class KeyRecord:
    """A key as listed: everything but the secret, which exists only as its SHA-256."""

    key_id: str
    org: str
    scope: Scope
    name: str
    prefix: str
    secret_hash: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    source: str = "api"  # "api" (minted, in the store) or "config" (declared in the YAML)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.key_id,
            "name": self.name,
            "scope": self.scope,
            "prefix": self.prefix,
            "source": self.source,
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
        }


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t else None


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def hash_secret(secret: str) -> str:
    # The secret is 160 random bits: a fast hash is enough, no password stretching needed.
    return hashlib.sha256(secret.encode()).hexdigest()


def mint_key(scope: Scope) -> tuple[str, str, str]:
    """A new key as (full key, key id, secret)."""
    key_id = secrets.token_hex(4)
    secret = secrets.token_hex(20)
    return f"{PREFIX_OF_SCOPE[scope]}{key_id}_{secret}", key_id, secret


def parse_key(key: str) -> tuple[Scope, str, str] | None:
    m = KEY_PATTERN.fullmatch(key)  # not match: `$` also matches before a trailing newline
    if not m:
        return None
    return SCOPE_OF_KIND[m.group(1)], m.group(2), m.group(3)


def display_prefix(key_or_id: str, scope: Scope) -> str:
    """What logs and listings show of a key: its scope prefix and id, never the secret."""
    return f"{PREFIX_OF_SCOPE[scope]}{key_or_id}"


class Authenticator:
    """Checks bearer keys against an in-memory view of the key table, kept current on writes."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._keys: dict[str, KeyRecord] = {}
        self._declared: dict[str, KeyRecord] = {}
        self._used: dict[str, datetime] = {}
        self.on_change: Callable[[], None] | None = None
        """Called after a key is created or revoked (a shared store tells the other nodes)."""

    def load(self) -> None:
        rows = self._store.query(
            "SELECT key_id, org, scope, name, prefix, secret_hash, created_at, last_used_at, "
            "revoked_at, source FROM api_keys"
        )
        with self._lock:
            self._keys = {r[0]: KeyRecord(*r) for r in rows}

    def declare(self, org: str, scope: Scope, key: str, name: str = "") -> None:
        """A key from the config file: valid while declared, never written to the store."""
        parsed = parse_key(key)
        if parsed is None or parsed[0] != scope:
            raise ValueError(f"declared {scope} key {key[:12]}… is malformed")
        _, key_id, secret = parsed
        with self._lock:
            self._declared[key_id] = KeyRecord(
                key_id,
                org,
                scope,
                name,
                display_prefix(key_id, scope),
                hash_secret(secret),
                datetime.now(UTC),
                source="config",
            )

    # -- authentication --------------------------------------------------------------------

    def authenticate(self, authorization: str | None, scope: Scope) -> Principal:
        """The principal of `Authorization: Bearer <key>` if the key is valid for `scope`."""
        if not authorization:
            raise AuthError("missing_authorization", "Missing Authorization header")
        kind, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            raise AuthError("invalid_api_key", "Authorization must be 'Bearer <key>'")
        return self.authenticate_key(token, scope)

    def authenticate_key(self, token: str, scope: Scope) -> Principal:
        parsed = parse_key(token)
        if parsed is None:
            raise AuthError("invalid_api_key", "API key format invalid")
        key_scope, key_id, secret = parsed
        with self._lock:
            record = self._declared.get(key_id) or self._keys.get(key_id)
        # Compare even when the id is unknown, so timing does not reveal which ids exist.
        expected = record.secret_hash if record else "0" * 64
        if not hmac.compare_digest(hash_secret(secret), expected) or record is None:
            raise AuthError("invalid_api_key", "API key not recognised")
        if record.revoked_at is not None:
            raise AuthError("key_revoked", "API key was revoked")
        if key_scope != record.scope or record.scope != scope:
            raise AuthError(
                "invalid_api_key",
                f"{_article(record.scope)} {record.scope} key cannot be used here; "
                f"this route needs {_article(scope)} {scope} key",
            )
        self._used[key_id] = datetime.now(UTC)
        return Principal(record.org, key_id, record.scope)

    # -- administration --------------------------------------------------------------------

    def create_key(self, org: str, scope: Scope, name: str) -> tuple[str, KeyRecord]:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        key, key_id, secret = mint_key(scope)
        while key_id in self._keys or key_id in self._declared:  # the id is the lookup: unique
            key, key_id, secret = mint_key(scope)
        record = KeyRecord(
            key_id,
            org,
            scope,
            name,
            display_prefix(key_id, scope),
            hash_secret(secret),
            datetime.now(UTC),
        )
        self._store.call(
            lambda cur: cur.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, 'api')",
                [
                    record.key_id,
                    org,
                    scope,
                    name,
                    record.prefix,
                    record.secret_hash,
                    record.created_at,
                ],
            )
        )
        with self._lock:
            self._keys[key_id] = record
        if self.on_change is not None:
            self.on_change()
        return key, record

    def list_keys(self, org: str) -> list[KeyRecord]:
        with self._lock:
            records = [r for r in (*self._keys.values(), *self._declared.values()) if r.org == org]
        return sorted(
            (replace(r, last_used_at=self._used.get(r.key_id, r.last_used_at)) for r in records),
            key=lambda r: r.created_at,
        )

    def revoke(self, org: str, key_id: str) -> KeyRecord | None:
        """Revoke one of `org`'s minted keys; None if it has no such key (another org's too)."""
        with self._lock:
            record = self._keys.get(key_id)
        if record is None or record.org != org:
            return None
        if record.revoked_at is not None:
            return record
        now = datetime.now(UTC)
        self._store.call(
            lambda cur: cur.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND org = ?",
                [now, key_id, org],
            )
        )
        revoked = replace(record, revoked_at=now)
        with self._lock:
            self._keys[key_id] = revoked
        if self.on_change is not None:
            self.on_change()
        return revoked

    def is_declared(self, key_id: str, org: str) -> bool:
        """Whether `org` has this key in the config file (another org's key is not found)."""
        record = self._declared.get(key_id)
        return record is not None and record.org == org

    def flush_last_used(self) -> None:
        """Write last_used_at of minted keys (batched: one write a minute, not one a request)."""
        used, self._used = self._used, {}
        minted = {k: t for k, t in used.items() if k in self._keys}
        if not minted:
            return

        def write(cur: Any) -> None:
            for key_id, t in minted.items():
                cur.execute("UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", [t, key_id])

        self._store.call(write)
        with self._lock:
            for key_id, t in minted.items():
                if key_id in self._keys:
                    self._keys[key_id] = replace(self._keys[key_id], last_used_at=t)
        for key_id, t in used.items():
            if key_id not in minted:
                self._used.setdefault(key_id, t)


def bootstrap_default_org(store: Store, auth: Authenticator) -> dict[Scope, str] | None:
    """On a store with no org at all: create org `default` with one key of each scope.

    One transaction, so a crash leaves either nothing (and the next start bootstraps) or all.
    Returns the new keys (to print once), or None if the store already had orgs.
    """
    if store.query("SELECT count(*) FROM orgs")[0][0]:
        return None
    now = datetime.now(UTC)
    minted: list[tuple[str, KeyRecord]] = []
    for scope in SCOPES:
        key, key_id, secret = mint_key(scope)
        record = KeyRecord(
            key_id,
            "default",
            scope,
            f"bootstrap {scope}",
            display_prefix(key_id, scope),
            hash_secret(secret),
            now,
        )
        minted.append((key, record))

    def write(cur: Any) -> None:
        cur.execute("INSERT INTO orgs VALUES ('default', ?, '{}')", [now])
        for _, r in minted:
            cur.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, 'api')",
                [r.key_id, r.org, r.scope, r.name, r.prefix, r.secret_hash, r.created_at],
            )

    store.call(write)
    auth.load()
    return {r.scope: key for key, r in minted}


def ensure_org(store: Store, org: str) -> None:
    if not store.query("SELECT 1 FROM orgs WHERE name = ?", [org]):
        store.call(
            lambda cur: cur.execute(
                "INSERT INTO orgs VALUES (?, ?, '{}')", [org, datetime.now(UTC)]
            )
        )
