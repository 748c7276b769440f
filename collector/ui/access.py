"""What a signed-in web UI user may see and do: each key of the session checked as the JSON API
that a page mirrors checks it, so a page follows the key's scope and org exactly as the API does.

Keys are checked by `collector/auth/keys.py` (read and admin keys) and `collector/evals/auth.py`
(the workspace token `wh-…`, and keys on the logs API), on every request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from collector.auth.keys import Authenticator, AuthError, display_prefix, parse_key
from collector.errors import ApiError
from collector.evals.auth import TOKEN, LogsAuth

# What a page needs, named after the API it mirrors:
#   read        the dashboard read API (runs, workflows, metrics, alert events): a read key
#   logs_read   the logs API's reads (review list): workspace token, read or admin key
#   logs_admin  the logs API's review decisions: workspace token or admin key
#   admin       the admin APIs (keys, alert rules, resolving events): an admin key
Need = Literal["read", "logs_read", "logs_admin", "admin"]
Kind = Literal["read", "admin", "workspace"]


@dataclass(frozen=True)
class Credential:
    kind: Kind
    label: str  # what pages show and `decidedBy` records: "al_read_aaaa0002", "wh-1a2b3c4d"
    org: str


class SignInRefused(Exception):
    """A key that cannot sign in; the message is shown on the sign-in form."""


class KeyAccess:
    def __init__(self, auth: Authenticator, logs: LogsAuth) -> None:
        self._auth = auth
        self._logs = logs

    def identify(self, key: str) -> Credential:
        """The credential of a key offered at sign-in; SignInRefused with a reason."""
        key = key.strip()
        if TOKEN.fullmatch(key):
            try:
                caller = self._logs.check(key, "read")
            except ApiError as e:
                raise SignInRefused(str(e)) from e
            return Credential("workspace", caller.label, caller.org)
        parsed = parse_key(key)
        if parsed is None:
            raise SignInRefused(
                "Not an API key: expected al_read_…, al_admin_… or a workspace token wh-…"
            )
        scope = parsed[0]
        if scope == "ingest":
            raise SignInRefused("An ingest key only sends data; sign in with a read or admin key")
        try:
            principal = self._auth.authenticate_key(key, scope)
        except AuthError as e:
            raise SignInRefused(str(e)) from e
        kind: Kind = "read" if scope == "read" else "admin"
        return Credential(kind, display_prefix(principal.key_id, scope), principal.org)

    def allows(self, key: str, need: Need) -> str | None:
        """The label of `key` if it passes the check of the API behind `need` now (not revoked,
        not rotated away, the right scope), else None."""
        try:
            if need in {"logs_read", "logs_admin"}:
                return self._logs.check(key, "read" if need == "logs_read" else "admin").label
            parsed = parse_key(key)
            if parsed is None or parsed[0] != need:
                return None
            principal = self._auth.authenticate_key(key, need)
        except (ApiError, AuthError):
            return None
        return display_prefix(principal.key_id, need)


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of one request: the session's keys that are still valid."""

    org: str
    keys: tuple[tuple[str, Credential], ...]
    access: KeyAccess

    @property
    def labels(self) -> list[str]:
        return [c.label for _, c in self.keys]

    def key_for(self, need: Need) -> tuple[str, str] | None:
        """(key, label) of the session's first key that the API behind `need` accepts."""
        for key, credential in self.keys:
            label = self.access.allows(key, need)
            if label is not None and credential.org == self.org:
                return key, label
        return None

    def can(self, need: Need) -> bool:
        return self.key_for(need) is not None


def viewer(access: KeyAccess, keys: tuple[str, ...]) -> Viewer | None:
    """The viewer of a session's keys: those still valid, all of one org; None if none is."""
    valid: list[tuple[str, Credential]] = []
    for key in keys:
        try:
            valid.append((key, access.identify(key)))
        except SignInRefused:
            continue  # revoked or rotated since sign-in: no longer used
    if not valid:
        return None
    org = valid[0][1].org
    return Viewer(org, tuple(k for k in valid if k[1].org == org), access)
