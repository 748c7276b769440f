"""Admin routes for an org's retention: `GET /api/retention` (the TTL of every kind of data and
where it comes from) and `PUT`/`PATCH /api/retention` (set days, 0 = forever, null = default).

Requests carry an admin key of the org; overrides go to `retention_settings` through
`collector/governance/retention.py`, the config's values being the defaults.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector.auth.keys import Authenticator, AuthError
from collector.errors import ApiError, error_response, from_api_error
from collector.governance import retention
from collector.governance.retention import KINDS, RetentionConfig
from collector.model import StoreUnavailable
from collector.store.writer import Store

MAX_DAYS = 36_500.0


class RetentionApi:
    def __init__(self, store: Store, auth: Authenticator, config: RetentionConfig) -> None:
        self._store = store
        self._auth = auth
        self._config = config

    def routes(self) -> list[Route]:
        return [
            Route("/api/retention", self._get, methods=["GET"]),
            Route("/api/retention", self._set, methods=["PUT", "PATCH"]),
        ]

    def _org(self, request: Request) -> str:
        try:
            return self._auth.authenticate(request.headers.get("authorization"), "admin").org
        except AuthError as e:
            raise ApiError(e.status, e.code, str(e)) from e

    def _body(self, org: str) -> dict[str, Any]:
        stored = retention.stored_overrides(self._store)
        return {
            "org": org,
            "interval_s": self._config.interval_s,
            "kinds": retention.effective(self._config, stored, org),
        }

    async def _get(self, request: Request) -> Response:
        try:
            org = self._org(request)
            return JSONResponse(await asyncio.to_thread(self._body, org))
        except ApiError as e:
            return from_api_error(e)
        except StoreUnavailable:
            return _unavailable()

    async def _set(self, request: Request) -> Response:
        try:
            org = self._org(request)
            changes = parse_changes(await request.body())
            await asyncio.to_thread(retention.set_overrides, self._store, org, changes)
            return JSONResponse(await asyncio.to_thread(self._body, org))
        except ApiError as e:
            return from_api_error(e)
        except StoreUnavailable:
            return _unavailable()


def parse_changes(raw: bytes) -> dict[str, float | None]:
    """`{"spans": 7, "runs": 0, "llm_calls": null}` → kind → days (None: back to the default);
    every bad entry is one 422 detail."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, RecursionError) as e:
        raise ApiError(422, "validation_error", f"Body is not valid JSON: {e}") from e
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


def _unavailable() -> Response:
    return error_response(
        503, "unavailable", "The store is unavailable", headers={"Retry-After": "1"}
    )
