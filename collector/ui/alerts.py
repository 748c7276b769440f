"""The Alerts page: the event feed (`GET /api/alert-events`, a read key), resolving an event and
enabling or disabling a rule (`PATCH /api/alert-events/{id}`, `/api/alert-rules/{id}/enable`,
`/disable`: an admin key).

The feed reads `collector/read/alerts.py` like the read API; writes go through `AlertsApi.resolve`
and `AlertsApi.set_enabled` (`collector/alerts/api.py`), the code of those routes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from collector.alerts.api import rule_json
from collector.api.params import decode_cursor, encode_cursor
from collector.errors import ApiError
from collector.read import alerts as read_alerts
from collector.ui.app import Page, UiApp
from collector.ui.dashboard import RANGES, params

PAGE_SIZE = 50


def routes(ui: UiApp) -> list[Route]:
    pages = Alerts(ui)
    post = ["POST"]
    return [
        Route("/ui/alerts", ui.page(pages.feed), methods=["GET"]),
        Route(
            "/ui/alerts/events/{event_id}/resolve",
            ui.page(pages.resolve, "admin", write=True),
            methods=post,
        ),
        Route(
            "/ui/alerts/rules/{rule_id}/{action:str}",
            ui.page(pages.set_enabled, "admin", write=True),
            methods=post,
        ),
    ]


class Alerts:
    def __init__(self, ui: UiApp) -> None:
        self.ui = ui

    async def feed(self, page: Page) -> Response:
        """The feed for a read key, the rules for an admin key; a session may hold both."""
        events: list[dict[str, Any]] | None = None
        next_url = None
        problems: list[dict[str, str]] = []
        q = params(page, self.ui.clock())
        state = page.query.get("state", "")
        if page.viewer.can("read"):
            where = read_alerts.AlertEventFilter(
                org=page.org,
                window=q.window(),
                rule_id=page.query.get("rule_id") or None,
                resolved={"open": False, "resolved": True}.get(state),
            )
            after = decode_cursor(q, read_alerts.EVENT_SORT, "BIGINT")
            problems = list(q.problems)
            if not problems:
                position = None if after is None else (int(after[0]), after[1])
                events, nxt = await self.ui.read(
                    read_alerts.list_events, self.ui.store, where, position, PAGE_SIZE
                )
                if nxt is not None:
                    kept = [(k, v) for k, v in page.query.multi_items() if k != "cursor"]
                    cursor = encode_cursor(read_alerts.EVENT_SORT, nxt[0], nxt[1])
                    next_url = "/ui/alerts?" + urlencode([*kept, ("cursor", cursor)])
        rules = None
        if page.viewer.can("admin"):
            rules = [rule_json(r) for r in await self.ui.alerts.list_rules(page.org)]
        return self.ui.render(
            page,
            page.request,
            "alerts.html",
            422 if problems else 200,
            events=events,
            rules=rules,
            problems=problems,
            state=state,
            ranges=list(RANGES),
            current_range=page.query.get("range", ""),
            next_url=next_url,
            can_admin=page.viewer.can("admin"),
            back=page.form.get("back") or str(page.request.url.query),
        )

    async def resolve(self, page: Page) -> Response:
        await self.ui.alerts.resolve(page.org, str(page.request.path_params["event_id"]))
        return _back(page)

    async def set_enabled(self, page: Page) -> Response:
        action = str(page.request.path_params["action"])
        if action not in ("enable", "disable"):
            raise ApiError(404, "not_found", "No such action.")
        rule_id = str(page.request.path_params["rule_id"])
        await self.ui.alerts.set_enabled(page.org, rule_id, action == "enable")
        return _back(page)


def _back(page: Page) -> Response:
    back = page.form.get("back")
    return RedirectResponse("/ui/alerts" + (f"?{back}" if back else ""), 303)
