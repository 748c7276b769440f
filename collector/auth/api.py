"""Admin HTTP API for an org's own keys: create (secret shown once), list, revoke.

Requests carry an admin key of the org; records come from and go to `collector.auth.keys`
(the `api_keys` table). Other orgs' keys are invisible: a 404, never a 403.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector.auth.keys import Authenticator, AuthError, KeyRecord
from collector.errors import ApiError, from_api_error
from collector.model import SCOPES, Principal


class AdminApi:
    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    def routes(self) -> list[Route]:
        return [
            Route("/api/keys", self._create, methods=["POST"]),
            Route("/api/keys", self._list, methods=["GET"]),
            Route("/api/keys/{key_id}", self._revoke, methods=["DELETE"]),
        ]

    def _principal(self, request: Request) -> Principal:
        try:
            return self._auth.authenticate(request.headers.get("authorization"), "admin")
        except AuthError as e:
            raise ApiError(e.status, e.code, str(e)) from e

    async def _create(self, request: Request) -> Response:
        try:
            principal = self._principal(request)
            body = await _json_object(request)
            scope: Any = body.get("scope")
            name: Any = body.get("name", "")
            details = key_request_problems(scope, name)
            if details:
                raise ApiError(422, "validation_error", "Invalid key request", details)
            key, record = await asyncio.to_thread(
                self._auth.create_key,
                principal.org,
                scope,
                name,
            )
        except ApiError as e:
            return from_api_error(e)
        return JSONResponse({**record.public(), "key": key}, status_code=201)

    async def _list(self, request: Request) -> Response:
        try:
            principal = self._principal(request)
        except ApiError as e:
            return from_api_error(e)
        return JSONResponse({"keys": [r.public() for r in self._auth.list_keys(principal.org)]})

    async def _revoke(self, request: Request) -> Response:
        try:
            principal = self._principal(request)
        except ApiError as e:
            return from_api_error(e)
        try:
            record = await revoke_key(self._auth, principal.org, request.path_params["key_id"])
        except ApiError as e:
            return from_api_error(e)
        return JSONResponse(record.public())


async def revoke_key(auth: Authenticator, org: str, key_id: str) -> KeyRecord:
    """Revoke one of `org`'s minted keys: ApiError 409 for a key of the config file, 404 for
    none (another org's included). The API's DELETE and the web UI call this."""
    if auth.is_declared(key_id, org):
        raise ApiError(
            409, "key_declared", "This key is declared in the config file; remove it there"
        )
    record = await asyncio.to_thread(auth.revoke, org, key_id)
    if record is None:
        raise ApiError(404, "not_found", "Key not found")
    return record


def key_request_problems(scope: object, name: object) -> list[dict[str, str]]:
    """What is wrong with a request for a new key, as `{"field", "message"}` details (the API's
    422 and the web UI's form both show them)."""
    details = []
    if scope not in SCOPES:
        details.append({"field": "scope", "message": f"must be one of {', '.join(SCOPES)}"})
    if not isinstance(name, str) or len(name) > 200:
        details.append({"field": "name", "message": "must be a string of at most 200 chars"})
    return details


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as e:
        raise ApiError(422, "validation_error", f"Body is not valid JSON: {e}") from e
    if not isinstance(body, dict):
        raise ApiError(422, "validation_error", "Body must be a JSON object")
    return body
