"""The `auth:` section of the config: orgs, the keys declared for them (valid while declared)
and their settings.

Parsed by `collector/config.py` with the rest of the file; the service declares these keys to
`collector.auth.keys.Authenticator` and hands the settings to `collector/auth/settings.py`
(checked at load by `collector/config.py` with the features' groups, each with its YAML path).
A key's value never appears in an error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from collector.configparse import ConfigIssue, describe
from collector.model import KEY_PATTERN, KIND_OF_SCOPE, SCOPE_OF_KIND

_ORG = re.compile(r"[a-z0-9_-]{1,64}")


@dataclass(frozen=True, kw_only=True)
class KeyConfig:
    """An API key given in the config. Messages and repr never show the secret."""

    scope: Literal["ingest", "read", "admin"]
    key: str = field(repr=False)
    name: str = ""

    @property
    def key_id(self) -> str:
        """The 8 hex after the prefix: public, unique, how keys are listed; "" if malformed."""
        m = KEY_PATTERN.fullmatch(self.key)
        return m[2] if m else ""

    def validate(self) -> list[ConfigIssue]:
        m = KEY_PATTERN.fullmatch(self.key)
        if m is None:
            return [
                ConfigIssue(
                    "key",
                    "not a valid agentledger key (expected al_<live|read|admin>_<8 hex id>_"
                    "<40 hex secret>, lowercase hex; the value is not shown)",
                )
            ]
        if SCOPE_OF_KIND[m[1]] != self.scope:
            article = "an" if self.scope[0] in "aeiou" else "a"
            message = (
                f"an al_{m[1]}_ key has scope {SCOPE_OF_KIND[m[1]]!r}, not {self.scope!r} "
                f"({article} {self.scope} key starts with al_{KIND_OF_SCOPE[self.scope]}_)"
            )
            return [ConfigIssue("key", message)]
        return []


@dataclass(frozen=True, kw_only=True)
class OrgConfig:
    name: str
    keys: list[KeyConfig] = field(default_factory=list)
    # The org's settings (docs/org-settings.md), under what an admin sets through the routes.
    settings: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> list[ConfigIssue]:
        if _ORG.fullmatch(self.name):
            return []
        message = "an org name is 1-64 of lowercase letters, digits, '-', '_'"
        return [ConfigIssue("name", f"{message}, got {describe(self.name)}")]


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    bootstrap: bool = True  # create org "default" and print its keys on first start
    orgs: list[OrgConfig] = field(default_factory=list)

    def validate(self) -> list[ConfigIssue]:
        issues: list[ConfigIssue] = []
        org_at: dict[str, str] = {}
        key_at: dict[str, str] = {}
        for i, org in enumerate(self.orgs):
            if org.name in org_at:
                issues.append(
                    ConfigIssue(f"orgs[{i}].name", f"duplicate org (also {org_at[org.name]})")
                )
            org_at.setdefault(org.name, f"auth.orgs[{i}]")
            for j, key in enumerate(org.keys):
                here, key_id = f"orgs[{i}].keys[{j}]", key.key_id
                if key_id in key_at:
                    message = f"key id {key_id} is used twice (also {key_at[key_id]})"
                    issues.append(ConfigIssue(f"{here}.key", message))
                if key_id:
                    key_at.setdefault(key_id, f"auth.{here}")
        return issues
