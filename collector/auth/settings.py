"""Per-org settings: one JSON document an org, in two layers, checked by the features that own
its keys, and the admin routes that show and change it (`GET`/`PATCH /api/org-settings`).

The config file's layer (`auth.orgs[].settings`, checked at load) is held in memory; the layer an
admin sets through a route is the `orgs.settings` column. A key set through a route wins over
the file, `null` hands it back to the file (or the default), as RFC 7386 merge patches do. Each
feature hands in a `SettingsGroup` (ROI: `collector/roi/settings.py`; run comparison:
`collector/read/compare.py`); `collector/config.py` and `service.py` use the one list of them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import duckdb

from collector.api import schema as sc
from collector.api.apis import ADMIN
from collector.api.routes import Call, Keys, Operation
from collector.auth.keys import Authenticator
from collector.configparse import EnvStr, suggest
from collector.errors import ApiError
from collector.store.writer import Store

Problems = list[dict[str, str]]
Source = Literal["api", "config", "default"]
TTL_S = 30.0  # how long a node serves an org's document before reading it again


@dataclass(frozen=True)
class SettingsGroup:
    """The per-org settings one feature owns. `properties` is each key's JSON Schema (the
    routes' body, the OpenAPI document, and how config values are typed); `resolve` turns a
    whole document (other groups' keys ignored) into its keys' effective values, defaults
    filled in, and every problem with its field, e.g. `limits.monthly_events`."""

    name: str
    properties: Mapping[str, sc.Schema]
    resolve: Callable[[Mapping[str, Any]], tuple[dict[str, Any], Problems]]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def body_schema(groups: Iterable[SettingsGroup]) -> sc.Schema:
    """A merge patch of the groups' keys: unknown keys are refused, and `null` is allowed for
    every key (it removes the key from the route's layer)."""
    properties = {k: v for g in groups for k, v in g.properties.items()}
    return sc.obj(properties, extra=False)


def checked_patch(
    groups: Sequence[SettingsGroup],
) -> Callable[[Any], Any]:
    """A route's `parse` for a merge patch of these groups' keys: each value given is checked
    by its group (whose messages say more than a schema's), before anything is read or
    written; relations to the stored layer are checked again when the patch is applied."""

    def parse(body: Any) -> Any:
        given = {k: v for k, v in body.items() if v is not None}
        _, problems = check(given, groups)
        if problems:
            raise ApiError(422, "validation_error", "Invalid settings", problems)
        return body

    return parse


def check(
    document: Mapping[str, Any], groups: Sequence[SettingsGroup]
) -> tuple[dict[str, Any], Problems]:
    """Every key's effective value, and every problem: the schema's (types) and the groups'
    own (relations, e.g. a custom task type named like a built-in), the groups' first."""
    values: dict[str, Any] = {}
    found: Problems = []
    for group in groups:
        own = {k: v for k, v in document.items() if k in group.properties}
        schema_problems = sc.problems(own, sc.obj(group.properties, nulls=False))
        group_values, group_problems = group.resolve(document)
        values.update(group_values)
        seen = {p["field"] for p in group_problems}
        found += group_problems + [p for p in schema_problems if p["field"] not in seen]
    return values, found


def from_config(
    raw: Mapping[str, Any], groups: Sequence[SettingsGroup]
) -> tuple[dict[str, Any], Problems]:
    """An org's settings as the config file gives them, with `${env:…}` values typed by their
    schema (`hourly_rate: ${env:RATE}` is a number), and every problem, as every section
    reports them: an unknown key with the known ones and a suggestion, a bad value with why."""
    properties = {k: v for g in groups for k, v in g.properties.items()}
    document = {k: _typed(v, properties.get(k)) for k, v in raw.items() if k in properties}
    problems: Problems = []
    for key in raw:
        if key not in properties:
            hint = suggest(str(key), list(properties))
            also = f"; did you mean {hint!r}?" if hint else ""
            message = f"unknown key (expected one of: {', '.join(properties)}{also})"
            problems.append({"field": str(key), "message": message})
    _, found = check(document, groups)
    return document, problems + found


def _typed(value: Any, schema: sc.Schema | None) -> Any:
    """A value whose whole text came from one `${env:…}` converted to its schema's type."""
    if schema is None:
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        return {
            k: _typed(v, props.get(k) or (extra if isinstance(extra, dict) else None))
            for k, v in value.items()
        }
    if not isinstance(value, EnvStr):
        return value
    kinds = schema.get("type")
    allowed = [kinds] if isinstance(kinds, str) else list(kinds or [])
    text = value.strip()
    if "null" in allowed and text == "":
        return None
    if "boolean" in allowed and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "integer" in allowed and text.lstrip("-").isdigit():
        return int(text)
    if "number" in allowed:
        try:
            return float(text)
        except ValueError:
            return value
    return str(value)


class PerOrgSettings:
    """Every org's settings as the running service sees them: the config file's layer (given,
    already checked), the route's layer (read from `orgs.settings`, cached `TTL_S` per node),
    and the groups that check and complete them."""

    def __init__(
        self,
        store: Store,
        groups: Sequence[SettingsGroup],
        declared: Mapping[str, Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.groups = tuple(groups)
        self._declared = {org: dict(doc) for org, doc in (declared or {}).items()}
        self._clock = clock
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    # -- reading ---------------------------------------------------------------------------

    def merged(self, org: str, stored: Mapping[str, Any] | None) -> dict[str, Any]:
        """The document in force: the route's layer merged over the config file's."""
        base = self._declared.get(org, {})
        return dict(merge_patch(base, dict(stored or {}))) if stored else dict(base)

    async def document(self, org: str, fresh: bool = False) -> dict[str, Any]:
        """`org`'s document in force; from this node's cache unless `fresh` or expired. The
        same dict comes back until it changes, so callers may cache what they derive by it."""
        cached = self._cache.get(org)
        if cached is not None and not fresh and self._clock() - cached[0] < TTL_S:
            return cached[1]
        stored = await asyncio.to_thread(self._stored, org)
        return self._remember(org, self.merged(org, stored))

    def document_now(self, org: str) -> dict[str, Any]:
        """`org`'s document in force, read now (for blocking handlers and rare routes)."""
        return self._remember(org, self.merged(org, self._stored(org)))

    def documents_in(
        self, cur: duckdb.DuckDBPyConnection, orgs: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The documents of `orgs` read through `cur` (a consumer on the writer's thread)."""
        stored = stored_documents(cur, orgs)
        return {org: self.merged(org, stored.get(org)) for org in orgs}

    def _stored(self, org: str) -> dict[str, Any]:
        rows = self._store.query("SELECT settings FROM orgs WHERE name = ?", [org])
        return _loads(rows[0][0]) if rows else {}

    def _remember(self, org: str, document: dict[str, Any]) -> dict[str, Any]:
        cached = self._cache.get(org)
        if cached is not None and cached[1] == document:
            document = cached[1]  # unchanged: the same object, so derived caches stay valid
        self._cache[org] = (self._clock(), document)
        return document

    def sources(self, org: str, stored: Mapping[str, Any]) -> dict[str, Source]:
        """Where each key's value comes from."""
        declared = self._declared.get(org, {})
        return {
            key: "api" if key in stored else "config" if key in declared else "default"
            for group in self.groups
            for key in group.properties
        }

    # -- writing ---------------------------------------------------------------------------

    async def patch(self, org: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a merge patch to `org`'s route layer in one transaction, if the document in
        force after it passes every group (else a 422 listing every problem); the document in
        force after it."""

        def write(cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
            row = cur.execute("SELECT settings FROM orgs WHERE name = ?", [org]).fetchone()
            stored = merge_patch(_loads(row[0]) if row else {}, dict(patch))
            document = self.merged(org, stored)
            _, problems = check(document, self.groups)
            if problems:
                raise ApiError(422, "validation_error", "Invalid settings", problems)
            text = json.dumps(stored)
            if row is None:
                cur.execute("INSERT INTO orgs VALUES (?, ?, ?)", [org, datetime.now(UTC), text])
            else:
                cur.execute("UPDATE orgs SET settings = ? WHERE name = ?", [text, org])
            return document

        document = await self._store.acall(write)
        self._cache[org] = (self._clock(), document)
        return document

    # -- the admin routes ------------------------------------------------------------------

    def operations(self, auth: Authenticator) -> list[Operation]:
        admin = Keys(auth, ("admin",))
        answer = sc.obj(
            {
                "org": sc.string(),
                "settings": sc.obj({}, description="every per-org setting's value in force"),
                "sources": sc.obj(
                    {}, extra=sc.enum(("api", "config", "default")), description="per key"
                ),
            },
            ["org", "settings", "sources"],
            nulls=False,
        )
        return [
            Operation(
                ADMIN,
                "GET",
                "/api/org-settings",
                self._get,
                "Every per-org setting in force, and where each comes from",
                admin,
                response=answer,
            ),
            Operation(
                ADMIN,
                "PATCH",
                "/api/org-settings",
                self._patch,
                "Change per-org settings (JSON merge patch: null hands a key back to the config "
                "file or the default)",
                admin,
                body=body_schema(self.groups),
                parse=checked_patch(self.groups),
                response=answer,
            ),
        ]

    async def _get(self, call: Call) -> dict[str, Any]:
        return await self._answer(call.org)

    async def _patch(self, call: Call) -> dict[str, Any]:
        await self.patch(call.org, call.body)
        return await self._answer(call.org)

    async def _answer(self, org: str) -> dict[str, Any]:
        stored = await asyncio.to_thread(self._stored, org)
        document = self._remember(org, self.merged(org, stored))
        values, _ = check(document, self.groups)
        return {"org": org, "settings": values, "sources": self.sources(org, stored)}


def stored_documents(
    cur: duckdb.DuckDBPyConnection, orgs: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The route layer of `orgs` (those with a row), read through `cur`."""
    rows = cur.execute(
        "SELECT name, settings FROM orgs WHERE name IN (SELECT unnest(?::VARCHAR[]))",
        [list(orgs)],
    ).fetchall()
    return {str(name): _loads(raw) for name, raw in rows}


def _loads(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}  # written by hand: read as no settings rather than failing every request
    return value if isinstance(value, dict) else {}
