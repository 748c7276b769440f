"""What every JSON route shares: authentication, the per-token rate limit, query parameters,
running the handler off the event loop, and mapping failures to the documented error shape.

`ReadApi` and `McpReadApi` hand their (path, handler) tables to `read_routes`; the evals API
wraps its request handlers in `endpoint`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import duckdb
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector.api.params import Params
from collector.api.ratelimit import SlidingWindowLimiter
from collector.auth.keys import Authenticator, AuthError
from collector.errors import ApiError, error_response, from_api_error
from collector.model import Principal, StoreUnavailable

log = logging.getLogger(__name__)

Handler = Callable[[Principal, Params, dict[str, Any]], Any]
WRITE_METHODS = ["POST", "PUT", "PATCH", "DELETE"]


def read_routes(
    table: Sequence[tuple[str, Handler]],
    auth: Authenticator,
    limiter: SlidingWindowLimiter,
    clock: Callable[[], datetime],
) -> list[Route]:
    """GET routes for `table`, plus a JSON 405 for writes on the same paths (not Starlette's
    plain-text one)."""

    def principal_of(request: Request) -> Principal:
        try:
            principal = auth.authenticate(request.headers.get("authorization"), "read")
        except AuthError as e:
            raise ApiError(e.status, e.code, str(e)) from e
        wait = limiter.check(principal.key_id)
        if wait is not None:
            raise ApiError(
                429,
                "rate_limited",
                f"More than {limiter.limit} requests a minute; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        return principal

    def endpoint(handler: Handler) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            try:
                principal = principal_of(request)
                params = Params(request.query_params, clock())
                body = await asyncio.to_thread(handler, principal, params, request.path_params)
            except ApiError as e:
                return from_api_error(e)
            except duckdb.InterruptException:
                return error_response(
                    503, "query_timeout", "The query ran too long", headers={"Retry-After": "5"}
                )
            except StoreUnavailable:
                return error_response(
                    503, "unavailable", "The store is unavailable", headers={"Retry-After": "5"}
                )
            except Exception:
                log.exception("read request failed: %s", request.url.path)
                return error_response(500, "internal_error", "Internal error")
            return JSONResponse(body)

        return run

    routes = [Route(path, endpoint(h), methods=["GET"]) for path, h in table]
    routes += [Route(path, _read_only, methods=WRITE_METHODS) for path, _ in table]
    return routes


async def _read_only(request: Request) -> Response:
    return error_response(
        405, "method_not_allowed", "Read routes accept GET only", headers={"Allow": "GET"}
    )


RequestHandler = Callable[[Request], Awaitable[Response]]


def endpoint(handler: RequestHandler) -> RequestHandler:
    """Errors of a request handler in the API's JSON shape: `ApiError` as raised, a closed store
    or a slow query as a retryable 503, instead of a 500."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as e:
            return from_api_error(e)
        except StoreUnavailable:
            return error_response(
                503, "unavailable", "The store is unavailable", headers={"Retry-After": "1"}
            )
        except duckdb.InterruptException:
            return error_response(
                503, "query_timeout", "The query ran too long", headers={"Retry-After": "5"}
            )

    return wrapped


def path_param(request: Request, name: str) -> str:
    return str(request.path_params[name])
