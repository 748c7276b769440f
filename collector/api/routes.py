"""The one JSON endpoint wrapper every API uses: routes are data (`Operation`), and one function
turns them into Starlette routes that authenticate, rate-limit, check the query string, path and
body against the declared schemas, run the handler (off the loop when it blocks) and answer
every failure in the API's own documented error shape.

Each API (the read API, the ROI API, MCP capture, output evaluation, the admin routes) hands a
list of operations to `routes()`; `collector/api/openapi.py` publishes the same list.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import duckdb
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from collector.api import schema as sc
from collector.api.body import DEFAULT_LIMIT, read_json, text_problem
from collector.api.params import Param, Params
from collector.api.ratelimit import Limiter
from collector.auth.keys import Authenticator, AuthError, parse_key
from collector.errors import ApiError, error_response, from_api_error
from collector.model import Principal, StoreUnavailable
from collector.model import Scope as KeyScope

log = logging.getLogger(__name__)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_PATH_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?}")


def utc_now() -> datetime:
    return datetime.now(UTC)


# -- what an API is -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    """One of the HTTP APIs: its name in the OpenAPI document, the seed doc it follows, the path
    prefixes it owns (an unknown path under one answers in this API's shape) and how its errors
    are rendered."""

    name: str
    title: str
    doc: str = ""
    prefixes: tuple[str, ...] = ()
    render: Callable[[ApiError], Response] = from_api_error

    def error(self, status: int, code: str, message: str, **headers: str) -> Response:
        return self.render(ApiError(status, code, message, headers=dict(headers) or None))


@dataclass
class Call:
    """One request as a handler sees it: already authenticated, limited and checked."""

    request: Request
    caller: Any  # what the operation's access returned (a Principal, an evals Caller, None)
    query: Params
    path: dict[str, str]
    body: Any  # the parsed JSON body (None when the operation takes none)

    @property
    def org(self) -> str:
        return str(self.caller.org)

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)


Handler = Callable[[Call], Any]


class Access(Protocol):
    """Who may call an operation: raises `ApiError` (401/403) or returns the caller."""

    @property
    def security(self) -> list[dict[str, list[str]]]:
        """The OpenAPI security requirements this access accepts."""
        ...

    @property
    def scopes(self) -> tuple[str, ...]:
        """The key scopes (or tokens) accepted, for the document."""
        ...

    def __call__(self, request: Request) -> Any: ...


@dataclass(frozen=True)
class Keys:
    """Our API keys of the given scopes, as `Authorization: Bearer <key>` (or, for MCP SDKs, the
    key itself in `key_header`). Several scopes: the key's own scope decides."""

    auth: Authenticator
    scopes: tuple[KeyScope, ...]
    key_header: str | None = None

    @property
    def security(self) -> list[dict[str, list[str]]]:
        found: list[dict[str, list[str]]] = [{"bearer": list(self.scopes)}]
        if self.key_header:
            found.append({"orgKey": list(self.scopes)})
        return found

    def __call__(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        try:
            if not header and self.key_header and request.headers.get(self.key_header):
                token = request.headers[self.key_header].strip()
                return self.auth.authenticate_key(token, self._scope_for(token))
            token = (header or "").strip().partition(" ")[2].strip()
            return self.auth.authenticate(header, self._scope_for(token))
        except AuthError as e:
            raise ApiError(e.status, e.code, str(e)) from e

    def _scope_for(self, token: str) -> KeyScope:
        parsed = parse_key(token) if len(self.scopes) > 1 else None
        if parsed is not None and parsed[0] in self.scopes:
            return parsed[0]
        return self.scopes[0]


@dataclass(frozen=True)
class SessionOnly:
    """A route of the hosted dashboard that needs a browser session, which this server does not
    have: every bearer token (and no token) is a 401, as `dashboard-read-api.txt` says of
    routes outside the read-token allowlist."""

    security: list[dict[str, list[str]]] = field(default_factory=lambda: [{"bearer": []}])
    scopes: tuple[str, ...] = ()

    def __call__(self, request: Request) -> Any:
        raise ApiError(
            401,
            "session_required",
            "This route needs a dashboard session; bearer tokens are not accepted here",
        )


class Limit(Protocol):
    """A rate limit checked after authentication: raises a 429 `ApiError` past it."""

    async def check(self, caller: Any) -> None: ...


@dataclass(frozen=True)
class PerKey:
    """At most `limiter.limit` requests per window per key; Retry-After says when a slot frees."""

    limiter: Limiter
    message: str = ""
    key_of: Callable[[Any], str] = lambda caller: str(caller.key_id)
    retry_after: int | None = None  # a fixed Retry-After where the API's doc names one

    async def check(self, caller: Any) -> None:
        wait = await self.limiter.admit(self.key_of(caller))
        if wait is not None:
            wait = self.retry_after or wait
            window = f"{self.limiter.window_s:g} s"
            message = self.message or (
                f"More than {self.limiter.limit} requests in {window}; retry in {wait} s"
            )
            raise ApiError(429, "rate_limited", message, headers={"Retry-After": str(wait)})


@dataclass(frozen=True)
class Operation:
    """One route of one API, as data. `body` is the JSON Schema of the request body (None: the
    route reads none) and `parse` an optional pure function from the checked body to what the
    handler gets (its 422 is merged with the schema's, so every problem is listed at once);
    `response` is the schema of the `ok` answer; `blocking` runs the handler in a worker
    thread; `errors` documents statuses beyond the ones every route can answer."""

    api: Api
    method: str
    path: str
    handler: Handler
    summary: str
    access: Access | None
    params: tuple[Param, ...] = ()
    body: sc.Schema | None = None
    body_required: bool = True
    body_limit: int | Callable[[], int] = DEFAULT_LIMIT
    ok: int = 200
    response: sc.Schema | None = None
    media: str = "application/json"
    limit: Limit | None = None
    parse: Callable[[Any], Any] | None = None
    blocking: bool = False
    errors: Mapping[int, str] = field(default_factory=dict)
    clock: Callable[[], datetime] = utc_now
    description: str = ""

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    @property
    def operation_id(self) -> str:
        words = re.sub(r"[{}:]|\bpath\b", "", self.path).strip("/").replace("-", "_")
        return f"{self.method.lower()}_{'_'.join(w for w in words.split('/') if w)}"


# -- running one request ---------------------------------------------------------------------------


async def run(op: Operation, request: Request) -> Response:
    """Answer `request` with `op`: every failure in the API's shape, never an exception out."""
    try:
        caller = op.access(request) if op.access is not None else None
        if op.limit is not None:
            await op.limit.check(caller)
        query = _query(op, request)
        path = _path(op, request)
        body = await _body(op, request) if op.body is not None else None
        call = Call(request, caller, query, path, body)
        if op.blocking:
            result = await asyncio.to_thread(op.handler, call)
        else:
            result = op.handler(call)
            if inspect.isawaitable(result):
                result = await result
        if not query.checked:
            query.raise_if_invalid()  # a GET handler that never looked at its parameters
        if isinstance(result, Response):
            return result
        return JSONResponse(result, status_code=op.ok)
    except ApiError as e:
        return op.api.render(e)
    except StoreUnavailable:
        return op.api.error(503, "unavailable", "The store is unavailable", **{"Retry-After": "1"})
    except duckdb.InterruptException:
        return op.api.error(503, "query_timeout", "The query ran too long", **{"Retry-After": "5"})
    except duckdb.TransactionException:
        return op.api.error(
            409, "conflict", "A concurrent change won; retry", **{"Retry-After": "1"}
        )
    except Exception:
        # Answered (the connection stays open for the client's next request), and logged
        # with the route so the bug can be found.
        log.exception("%s %s failed", op.method, op.path)
        return op.api.error(500, "internal_error", "Internal error")


def _query(op: Operation, request: Request) -> Params:
    params = Params(request.query_params, op.clock())
    for name, value in request.query_params.multi_items():
        if text_problem(name):
            params.problem("query", f"a parameter name {text_problem(name)}")
        elif why := text_problem(value):
            params.problem(name, why)
    params.raise_if_invalid()  # text no query can hold never reaches a handler
    params.checked = False
    for p in op.params:
        if p.where == "header":
            header = request.headers.get(p.name)
            if header is not None:
                for problem in sc.problems(header, p.schema, p.name):
                    params.problem(problem["field"], problem["message"])
            elif p.required:
                params.problem(p.name, "is required")
            continue
        values = [v for v in request.query_params.getlist(p.name) if v != ""]
        if not values:
            if p.required:
                params.problem(p.name, "is required")
            continue
        for problem in _param_problems(p, values):
            params.problem(problem["field"], problem["message"])
    if op.method != "GET":
        params.raise_if_invalid()  # before anything is written
    # A GET handler reads its parameters first and raises with every problem at once (the
    # schema's and its own, e.g. a cursor it did not issue).
    return params


def _param_problems(p: Param, values: list[str]) -> list[dict[str, str]]:
    kinds = p.schema.get("type")
    if kinds == "array":
        items: sc.Schema = p.schema.get("items") or {}
        split = items.get("type") == "string" and "enum" in items
        parts = [s.strip() for v in values for s in (v.split(",") if split else [v])]
        found: list[dict[str, str]] = []
        for part in parts:
            found += sc.problems(_coerce(part, items), items, p.name)
        return found[:1]
    return sc.problems(_coerce(values[-1], p.schema), p.schema, p.name)


def _coerce(raw: str, schema: sc.Schema) -> Any:
    """A query-string value as the JSON type its schema names (left a string if it is not one,
    so the schema check reports it)."""
    kinds = schema.get("type")
    allowed = [kinds] if isinstance(kinds, str) else list(kinds or [])
    if "integer" in allowed and re.fullmatch(r"-?\d{1,18}", raw):
        return int(raw)
    if "number" in allowed:
        try:
            return float(raw)
        except ValueError:
            return raw
    if "boolean" in allowed and raw.lower() in ("true", "false", "1", "0"):
        return raw.lower() in ("true", "1")
    return raw


def _path(op: Operation, request: Request) -> dict[str, str]:
    path = {k: str(v) for k, v in request.path_params.items()}
    problems = [
        {"field": k, "message": why}
        for k, v in path.items()
        if (why := text_problem(v)) is not None
    ]
    if problems:
        raise ApiError(422, "validation_error", "Invalid path parameters", problems)
    return path


async def _body(op: Operation, request: Request) -> Any:
    assert op.body is not None
    limit = op.body_limit() if callable(op.body_limit) else op.body_limit
    value = await read_json(request, limit)
    if value is None:
        if op.body_required:
            raise ApiError(
                422,
                "validation_error",
                "A JSON body is required",
                [{"field": "body", "message": "is required"}],
            )
        value = {} if op.body.get("type") == "object" else None
    problems = sc.problems(value, op.body)
    # The parser gets a value of the body's type (a list where an object belongs stops here).
    if op.parse is not None and not any(p["field"] == "body" for p in problems):
        try:
            value = op.parse(value)
        except ApiError as e:
            if e.status != 422:
                raise
            # The parser's messages are the more specific; the schema's add what it missed.
            found = list(e.details or [])
            seen = {d.get("field") for d in found if isinstance(d, dict)}
            found += [p for p in problems if p["field"] not in seen]
            raise ApiError(422, e.code, str(e), found) from e
    if problems:
        raise ApiError(422, "validation_error", "Invalid body", problems)
    return value


# -- building the routes -------------------------------------------------------------------------


def routes(operations: Sequence[Operation]) -> list[BaseRoute]:
    """One Starlette route per path, which dispatches on the method: a method the path does not
    serve is a 405 with `Allow`, in the API's shape (not Starlette's plain text). Paths with
    literal segments come before templated ones (`/api/runs/compare` before `{run_id}`)."""
    by_path: dict[str, dict[str, Operation]] = {}
    for op in operations:
        if op.body is not None:
            sc.check_supported(op.body, f"{op.method} {op.path} body")
        for p in op.params:
            sc.check_supported(p.schema, f"{op.method} {op.path} {p.name}")
        methods = by_path.setdefault(op.path, {})
        if op.method in methods:
            raise ValueError(f"{op.method} {op.path} is defined twice")
        methods[op.method] = op
    ordered = sorted(by_path, key=lambda path: path.count("{"))
    return [Route(path, _dispatch(by_path[path]), methods=METHODS) for path in ordered]


def _dispatch(ops: dict[str, Operation]) -> Callable[[Request], Any]:
    allow = ", ".join(ops)
    api = next(iter(ops.values())).api

    async def endpoint(request: Request) -> Response:
        op = ops.get(request.method)
        if op is None:
            return api.error(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed here (allowed: {allow})",
                Allow=allow,
            )
        return await run(op, request)

    return endpoint


class NotFound:
    """The ASGI app for a path no route matches: a 404 in the shape of the API whose prefix it
    is under (`/api/runs/a/b` answers like the read API), else the common JSON shape."""

    def __init__(self, apis: Sequence[Api]) -> None:
        self._prefixes = sorted(
            ((prefix, api) for api in apis for prefix in api.prefixes),
            key=lambda pair: -len(pair[0]),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = str(scope.get("path", ""))
        message = "No such route"
        for prefix, api in self._prefixes:
            if path.startswith(prefix):
                response = api.error(404, "not_found", message)
                break
        else:
            response = error_response(404, "not_found", message)
        await response(scope, receive, send)


def apis_of(operations: Sequence[Operation]) -> list[Api]:
    return list({id(op.api): op.api for op in operations}.values())
