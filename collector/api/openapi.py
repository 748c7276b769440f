"""The OpenAPI 3.1 document of every JSON route, built from the same `Operation` definitions the
endpoint wrapper checks requests with (so the document cannot drift from the server).

The service serves it at `GET /openapi.json`; tests/e2e run Schemathesis against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector.api import schema as sc
from collector.api.routes import Operation, apis_of

ERROR = sc.obj(
    {
        "error": sc.string(description="what went wrong, for a person"),
        "code": sc.string(description="a stable code, e.g. validation_error, invalid_api_key"),
        "details": sc.array(
            sc.obj({"field": sc.string(), "message": sc.string()}),
            description="one entry per problem (422)",
        ),
    },
    ["error"],
    nulls=False,
)
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: al_live_… (ingest), al_read_… (read), al_admin_… (admin), "
        "or the output-evaluation workspace token wh-…",
    },
    "orgKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Org-Id",
        "description": "An ingest key, as MCP SDKs send it (capture-event-api.txt)",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "Output evaluation: the workspace token or a key (logs-rules-api.txt)",
    },
}
_REASONS = {
    400: "a body that could not be decompressed",
    401: "missing, invalid, revoked or wrong-scope token",
    403: "authenticated but not allowed",
    404: "not found, or another org's",
    409: "conflict",
    413: "body too large (after decompression)",
    415: "Content-Type other than JSON, or an unknown Content-Encoding",
    422: "validation_error: every bad field in details",
    429: "rate limited: retry after Retry-After seconds",
    500: "internal error (logged)",
    503: "store unavailable or query too slow: retry after Retry-After seconds",
}


def document(operations: Sequence[Operation], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations`."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(_template(op.path), {})[op.method.lower()] = _operation(op)
    apis = apis_of(operations)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agentledger JSON APIs",
            "version": version,
            "description": "Every JSON route of the collector (the native ingest APIs, the "
            "read APIs and the admin API). Errors are {error, code, details}.",
        },
        "tags": [{"name": api.name, "description": f"{api.title}: {api.doc}"} for api in apis],
        "paths": paths,
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "schemas": {"Error": ERROR},
        },
    }


def route(operations: Sequence[Operation], version: str) -> Route:
    """`GET /openapi.json`, public (the contract holds no secret)."""
    body = document(operations, version)

    async def serve(request: Request) -> Response:
        return JSONResponse(body)

    return Route("/openapi.json", serve, methods=["GET"])


def _template(path: str) -> str:
    # Starlette's `{name:path}` is OpenAPI's `{name}` (which may not hold a slash: documented).
    out = path
    while ":path}" in out:
        out = out.replace(":path}", "}")
    return out


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.api.name],
        "parameters": _parameters(op),
        "responses": _responses(op),
    }
    if op.description:
        out["description"] = op.description
    if op.access is None:
        out["security"] = []
    else:
        out["security"] = op.access.security
        out["x-accepted"] = list(op.access.scopes)
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": op.body}},
        }
    return out


def _parameters(op: Operation) -> list[dict[str, Any]]:
    found = [
        {"name": name, "in": "path", "required": True, "schema": sc.string(min_length=1)}
        for name in op.path_params
    ]
    for p in op.params:
        param: dict[str, Any] = {"name": p.name, "in": p.where, "schema": p.schema}
        if p.required:
            param["required"] = True
        if p.description:
            param["description"] = p.description
        if p.schema.get("type") == "array":
            param["style"], param["explode"] = "form", True
        found.append(param)
    return found


def _responses(op: Operation) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "success"}
    if op.media:
        ok["content"] = {op.media: {"schema": op.response or {}}}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    statuses = {422, 500, 503}
    if op.access is not None:
        statuses.add(401)
    if op.path_params:
        statuses.add(404)
    if op.limit is not None:
        statuses.add(429)
    if op.body is not None:
        statuses |= {400, 413, 415}
    out: dict[str, Any] = {str(op.ok): ok}
    for status in sorted(statuses | set(op.errors)):
        reason = op.errors.get(status) or _REASONS.get(status, "error")
        out[str(status)] = {"description": reason, "content": error}
    out["default"] = {"description": "any other error, in the same shape", "content": error}
    return out
