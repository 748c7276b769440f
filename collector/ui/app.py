"""The web UI's routes and what every page shares: the session guard, scope checks, CSRF and
origin checks on writes, form parsing, rendering, error pages and security headers.

`collector/service.py` mounts `UiApp.routes()` on the API listener. Pages live by the API they
mirror (`dashboard.py`, `review.py`, `alerts.py`, `keys.py`); they read through the read API's
query layer and write through the same functions as the API routes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

import duckdb
import jinja2
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from collector.alerts.api import AlertsApi
from collector.auth.keys import Authenticator
from collector.errors import ApiError
from collector.evals.api import EvalsApi
from collector.model import StoreUnavailable
from collector.secretbox import SecretBox
from collector.store.writer import Store
from collector.ui import format as fmt
from collector.ui.access import KeyAccess, Kind, Need, SignInRefused, Viewer, viewer
from collector.ui.config import UiConfig
from collector.ui.session import (
    COOKIE,
    SIGN_IN_COOKIE,
    Sessions,
    UiSession,
    clear_cookie,
    same_token,
    set_cookie,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_FORM_BYTES = 256 * 1024  # a bulk review of 1,000 ids fits easily
HEADERS = {
    # Our own CSS and nothing else; no script is needed for any page.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # pages hold an org's data, and a new key is shown once
}
# Where a sign-in without a page to return to lands: the first page the key may open.
LANDING: dict[Kind, str] = {"read": "/ui/", "workspace": "/ui/review", "admin": "/ui/alerts"}
NEEDS_TEXT: dict[Need, str] = {
    "read": "a read key (al_read_…)",
    "logs_read": "the workspace token (wh-…), a read key or an admin key",
    "logs_admin": "the workspace token (wh-…) or an admin key",
    "admin": "an admin key (al_admin_…)",
}


class Form:
    """A urlencoded form body: `get` (last value) and `getlist`, like Starlette's FormData."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def get(self, name: str, default: str = "") -> str:
        values = self.getlist(name)
        return values[-1] if values else default

    def getlist(self, name: str) -> list[str]:
        return [v for k, v in self._pairs if k == name]


@dataclass
class Page:
    """One request to a page: who asks, their session, the parsed form of a write."""

    request: Request
    session: UiSession
    viewer: Viewer
    form: Form = field(default_factory=lambda: Form([]))

    @property
    def org(self) -> str:
        return self.viewer.org

    @property
    def query(self) -> QueryParams:
        return self.request.query_params

    def label_for(self, need: Need) -> str:
        found = self.viewer.key_for(need)
        if found is None:  # the guard checked it; a key revoked in between lands here
            raise ApiError(403, "forbidden", f"This needs {NEEDS_TEXT[need]}")
        return found[1]


Handler = Callable[[Page], Awaitable[Response]]


class UiApp:
    def __init__(
        self,
        *,
        store: Store,
        auth: Authenticator,
        logs: EvalsApi,
        alerts: AlertsApi,
        config: UiConfig,
        box: SecretBox,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.auth = auth
        self.logs = logs
        self.alerts = alerts
        self.clock = clock
        self.sessions = Sessions(box, config.session_hours * 3600)
        self.access = KeyAccess(auth, logs.auth)
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("collector.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,  # a misspelt name fails the page test, not silently
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(fmt.FILTERS)
        self.templates = Jinja2Templates(env=env)

    def routes(self) -> list[BaseRoute]:
        from collector.ui import alerts, dashboard, keys, review  # they import this module

        get, post = ["GET"], ["POST"]
        return [
            Route("/", _to_ui, methods=get),
            Route("/ui", _to_ui, methods=get),
            Mount("/ui/static", StaticFiles(packages=[("collector.ui", "static")])),
            Route("/ui/sign-in", self._sign_in_form, methods=get),
            Route("/ui/sign-in", self._sign_in, methods=post),
            Route("/ui/sign-out", self.page(self._sign_out, write=True), methods=post),
            *dashboard.routes(self),
            *review.routes(self),
            *alerts.routes(self),
            *keys.routes(self),
        ]

    # -- the guard -------------------------------------------------------------------------

    def page(self, handler: Handler, need: Need | None = None, write: bool = False) -> Any:
        """A route endpoint: signed in (else to the sign-in page), `need` met (else 403), and
        for a write a same-origin POST carrying the session's CSRF token (else 403)."""

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            session = self.sessions.open(request.cookies.get(COOKIE))
            who = None if session is None else viewer(self.access, session.keys)
            if session is None or who is None:
                if write:
                    return self.error(request, None, 403, "Sign in first", "You are not signed in.")
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return _secure(RedirectResponse(f"/ui/sign-in?next={quote(target)}", 303))
            page = Page(request, session, who)
            if write:
                page.form = await read_form(request)
                refused = self._refuse_write(request, session, page.form)
                if refused is not None:
                    return self.error(request, page, 403, "Refused", refused)
            if need is not None and not who.can(need):
                message = f"This page needs {NEEDS_TEXT[need]}; you are signed in with " + (
                    ", ".join(who.labels) + ". Sign in with such a key as well to use it."
                )
                return self.error(request, page, 403, "Not allowed with your key", message)
            try:
                response = await handler(page)
            except ApiError as e:
                title = "Not found" if e.status == 404 else "Cannot do that"
                return self.error(request, page, e.status, title, str(e))
            except (StoreUnavailable, duckdb.InterruptException):
                return self.error(
                    request, page, 503, "Try again", "The store is busy or unavailable."
                )
            except Exception:
                log.exception("UI page failed: %s", request.url.path)
                return self.error(request, page, 500, "Something went wrong", "Internal error.")
            response.headers["Server-Timing"] = (
                f"app;dur={(time.perf_counter() - started) * 1e3:.1f}"
            )
            return _secure(response)

        return endpoint

    def _refuse_write(self, request: Request, session: UiSession, form: Form) -> str | None:
        if not _same_origin(request):
            return "This form was sent from another site."
        if not same_token(session.csrf, form.get("csrf")):
            return (
                "The form's security token is missing or out of date (CSRF check). "
                "Reload the page and try again."
            )
        return None

    # -- rendering -------------------------------------------------------------------------

    def render(
        self, page: Page | None, request: Request, template: str, status: int = 200, **data: Any
    ) -> Response:
        context: dict[str, Any] = {
            "viewer": page.viewer if page else None,
            "csrf": page.session.csrf if page else "",
            "can": page.viewer.can if page else _never,
            "path": request.url.path,
            **data,
        }
        return _secure(
            self.templates.TemplateResponse(request, template, context, status_code=status)
        )

    def error(
        self, request: Request, page: Page | None, status: int, title: str, message: str
    ) -> Response:
        return self.render(page, request, "error.html", status, title=title, message=message)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking query function, off the event loop."""
        return await asyncio.to_thread(fn, *args)

    # -- sign in and out -------------------------------------------------------------------

    async def _sign_in_form(self, request: Request) -> Response:
        return self._sign_in_page(request, "", 200)

    def _sign_in_page(self, request: Request, problem: str, status: int) -> Response:
        token = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
        session = self.sessions.open(request.cookies.get(COOKIE))
        who = None if session is None else viewer(self.access, session.keys)
        page = Page(request, session, who) if session is not None and who is not None else None
        response = self.render(
            page,
            request,
            "sign_in.html",
            status,
            problem=problem,
            sign_in_token=token,
            next=_safe_next(request.query_params.get("next")),
        )
        set_cookie(response, request, SIGN_IN_COOKIE, token, 3600)
        return response

    async def _sign_in(self, request: Request) -> Response:
        form = await read_form(request)
        expected = request.cookies.get(SIGN_IN_COOKIE) or ""
        if not _same_origin(request) or not expected or not same_token(expected, form.get("csrf")):
            return self.error(
                request, None, 403, "Refused", "The sign-in form is out of date; reload it."
            )
        previous = self.sessions.open(request.cookies.get(COOKIE))
        held = previous.keys if previous is not None else ()
        key = form.get("key").strip()
        try:
            credential = self.access.identify(key)
            current = viewer(self.access, held) if held else None
            if current is not None and current.org != credential.org:
                raise SignInRefused(
                    "That key is of another org than the keys you are signed in with; "
                    "sign out first"
                )
        except SignInRefused as e:
            log.info("UI sign-in refused: %s", e)  # the reason only, never the key
            return self._sign_in_page(request, str(e), 401)
        still = _keys(current) if current is not None else set()  # revoked ones are dropped
        keys = tuple(k for k in held if k != key and k in still)
        cookie, _ = self.sessions.issue((*keys, key), previous)
        landing = _safe_next(form.get("next")) or LANDING[credential.kind]
        response = RedirectResponse(landing, 303)
        set_cookie(response, request, COOKIE, cookie, int(self.sessions.ttl_s))
        clear_cookie(response, request, SIGN_IN_COOKIE)
        return _secure(response)

    async def _sign_out(self, page: Page) -> Response:
        self.sessions.end(page.session)
        response = RedirectResponse("/ui/sign-in", 303)
        clear_cookie(response, page.request, COOKIE)
        return response


def _never(need: Need) -> bool:
    return False


def _keys(v: Viewer) -> set[str]:
    return {k for k, _ in v.keys}


async def read_form(request: Request) -> Form:
    """The urlencoded body, bounded; anything else reads as an empty form (and so fails the
    CSRF check of a write)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return Form([])
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return Form([])
    return Form(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _same_origin(request: Request) -> bool:
    """A browser names the page a POST came from in Origin (or at least Referer); either must
    be this server. No header at all is a client that is not a browser: the CSRF token decides."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return True
    if source == "null":
        return False
    host = request.headers.get("host", "")
    return urlsplit(source).netloc == host


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path of the UI (no open redirect elsewhere)."""
    if not target or not target.startswith("/ui/") or target.startswith("//"):
        return ""
    return target if "\\" not in target else ""


def _secure(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def _to_ui(request: Request) -> Response:
    return RedirectResponse("/ui/", 307 if request.method != "GET" else 302)
