"""Admin HTTP API for an org's own keys: create (secret shown once), list, revoke.

Requests carry an admin key of the org; records come from and go to `collector.auth.keys`
(the `api_keys` table). Other orgs' keys are invisible: a 404, never a 403.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse
from starlette.routing import BaseRoute

from collector.api import schema as sc
from collector.api.apis import ADMIN
from collector.api.routes import Call, Keys, Operation, routes
from collector.auth.keys import Authenticator, KeyRecord
from collector.errors import ApiError
from collector.model import SCOPES

KEY = sc.obj(
    {
        "id": sc.string(),
        "scope": sc.enum(SCOPES),
        "name": sc.string(),
        "prefix": sc.string(),
        "created_at": sc.nullable(sc.string()),
        "last_used_at": sc.nullable(sc.string()),
        "revoked_at": sc.nullable(sc.string()),
        "source": sc.string(),
    },
    ["id", "scope", "prefix"],
    nulls=False,
)
CREATE_BODY = sc.obj(
    {"scope": sc.enum(SCOPES), "name": sc.string(200, description="what the key is for")},
    ["scope"],
    extra=False,
)


class AdminApi:
    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    def routes(self) -> list[BaseRoute]:
        return routes(self.operations())

    def operations(self) -> list[Operation]:
        admin = Keys(self._auth, ("admin",))
        return [
            Operation(
                ADMIN,
                "POST",
                "/api/keys",
                self._create,
                "Create a key (its secret is in this answer only)",
                admin,
                body=CREATE_BODY,
                ok=201,
                response={**KEY, "properties": {**KEY["properties"], "key": sc.string()}},
            ),
            Operation(
                ADMIN,
                "GET",
                "/api/keys",
                self._list,
                "The org's keys, by prefix",
                admin,
                response=sc.obj({"keys": sc.array(KEY)}, ["keys"]),
            ),
            Operation(
                ADMIN,
                "DELETE",
                "/api/keys/{key_id}",
                self._revoke,
                "Revoke a key",
                admin,
                response=KEY,
                errors={409: "the key is declared in the config file"},
            ),
        ]

    async def _create(self, call: Call) -> JSONResponse:
        body = call.body
        key, record = await asyncio.to_thread(
            self._auth.create_key, call.org, body["scope"], body.get("name") or ""
        )
        return JSONResponse({**record.public(), "key": key}, status_code=201)

    def _list(self, call: Call) -> dict[str, Any]:
        return {"keys": [r.public() for r in self._auth.list_keys(call.org)]}

    async def _revoke(self, call: Call) -> dict[str, Any]:
        return (await revoke_key(self._auth, call.org, call.path["key_id"])).public()


def key_request_problems(scope: Any, name: Any) -> list[dict[str, str]]:
    """What is wrong with a request for a new key, by the schema the API route checks (the web
    UI's form asks through this); [] when nothing is."""
    return sc.problems({"scope": scope, "name": name}, CREATE_BODY)


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
