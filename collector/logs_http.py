"""The HTTP plumbing every logs-API route shares: errors rendered in the API's JSON shape.

Handlers raise `ApiError`; `endpoint` turns it (and a closed store or a slow query) into the
documented `{"error", "code", "details"}` answer instead of a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import duckdb
from starlette.requests import Request
from starlette.responses import Response

from collector.errors import ApiError, error_response, from_api_error
from collector.model import StoreUnavailable

log = logging.getLogger(__name__)
Handler = Callable[[Request], Awaitable[Response]]


def endpoint(handler: Handler) -> Handler:
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
