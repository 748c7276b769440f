"""Admin routes for an org's retention: `GET /api/retention` (the TTL of every kind of data and
where it comes from) and `PUT`/`PATCH /api/retention` (set days, 0 = forever, null = default).

Requests carry an admin key of the org; overrides go to `retention_settings` through
`collector/governance/retention.py`, the config's values being the defaults.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from starlette.routing import BaseRoute

from collector.api import schema as sc
from collector.api.apis import ADMIN
from collector.api.routes import Call, Keys, Operation, routes
from collector.auth.keys import Authenticator
from collector.errors import ApiError
from collector.governance import retention
from collector.governance.retention import KINDS, RetentionConfig
from collector.store.writer import Store

MAX_DAYS = 36_500.0
DAYS = sc.nullable(
    sc.number(0, MAX_DAYS, description="days to keep; 0 keeps forever, null: the default")
)
CHANGES = sc.obj({kind: DAYS for kind in KINDS}, extra=False, nulls=False, minProperties=1)
ANSWER = sc.obj(
    {"org": sc.string(), "interval_s": sc.number(), "kinds": sc.obj({})},
    ["org", "kinds"],
)


class RetentionApi:
    def __init__(self, store: Store, auth: Authenticator, config: RetentionConfig) -> None:
        self._store = store
        self._auth = auth
        self._config = config

    def routes(self) -> list[BaseRoute]:
        return routes(self.operations())

    def operations(self) -> list[Operation]:
        admin = Keys(self._auth, ("admin",))
        change = "Set the org's retention per kind of data (days; 0 = forever, null = default)"
        return [
            Operation(ADMIN, "GET", "/api/retention", self._get,
                      "The org's retention of every kind of data", admin, response=ANSWER),
            *(
                Operation(ADMIN, method, "/api/retention", self._set, change, admin,
                          body=CHANGES, response=ANSWER)
                for method in ("PUT", "PATCH")
            ),
        ]  # fmt: skip

    def _body(self, org: str) -> dict[str, Any]:
        stored = retention.stored_overrides(self._store)
        return {
            "org": org,
            "interval_s": self._config.interval_s,
            "kinds": retention.effective(self._config, stored, org),
        }

    async def _get(self, call: Call) -> dict[str, Any]:
        return await asyncio.to_thread(self._body, call.org)

    async def _set(self, call: Call) -> dict[str, Any]:
        changes = parse_changes(call.body)
        await asyncio.to_thread(retention.set_overrides, self._store, call.org, changes)
        return await asyncio.to_thread(self._body, call.org)


def parse_changes(body: Any) -> dict[str, float | None]:
    """`{"spans": 7, "runs": 0, "llm_calls": null}` → kind → days (None: back to the default);
    every bad entry is one 422 detail."""
    if not isinstance(body, dict) or not body:
        raise ApiError(
            422, "validation_error", "Body must be a JSON object of kind: days (or null)"
        )
    details = []
    changes: dict[str, float | None] = {}
    for kind, days in body.items():
        if kind not in KINDS:
            details.append({"field": kind, "message": f"unknown kind; one of {', '.join(KINDS)}"})
        elif days is None:
            changes[kind] = None
        elif (
            isinstance(days, bool)
            or not isinstance(days, int | float)
            or not math.isfinite(days)
            or not 0 <= days <= MAX_DAYS
        ):
            message = f"must be a number of days from 0 (keep forever) to {MAX_DAYS:.0f}, or null"
            details.append({"field": kind, "message": message})
        else:
            changes[kind] = float(days)
    if details:
        raise ApiError(422, "validation_error", "Invalid retention settings", details)
    return changes
