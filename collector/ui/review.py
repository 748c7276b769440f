"""The Review page (`logs-rules-api.txt`): the flagged and failed outputs still waiting for a
human (`GET /api/logs?pending=true`), with Approve / Reject per log and for a selection.

Listing reads `collector/evals/queries.py` like the logs API; decisions go through
`LogViews.decide` (`collector/evals/review.py`), as `PATCH /api/logs/{id}/decision` and
`PATCH /api/logs/bulk` do: the callbacks fire and `decidedBy` names the key of the session.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from collector.errors import ApiError
from collector.evals import queries as lq
from collector.evals import shapes as lj
from collector.evals.review import MAX_BULK
from collector.ui.app import Page, UiApp

PAGE_SIZE = 20
DECISIONS = {"approve": "approved", "reject": "rejected"}


def routes(ui: UiApp) -> list[Route]:
    pages = Review(ui)
    return [
        Route("/ui/review", ui.page(pages.list, "logs_read"), methods=["GET"]),
        Route("/ui/review", ui.page(pages.decide, "logs_admin", write=True), methods=["POST"]),
    ]


class Review:
    def __init__(self, ui: UiApp) -> None:
        self.ui = ui

    async def list(self, page: Page) -> Response:
        q = page.query
        project = q.get("project") or None
        task = q.get("task") or None
        raw_page = q.get("page", "1")
        number = int(raw_page) if raw_page.isdigit() and 0 < int(raw_page) < 100_000 else 1
        where = lq.LogFilter(org=page.org, pending=True, project=project, task=task)
        store = self.ui.store

        def load() -> tuple[list[dict[str, Any]], int, list[dict[str, Any]], list[str]]:
            rows, total, _ = lq.list_logs(
                store, where, sort="timestamp", direction="desc", page=number, limit=PAGE_SIZE
            )
            return (
                rows,
                total,
                lq.projects(store, page.org),
                lq.task_names(store, page.org, project),
            )

        rows, total, projects, tasks = await self.ui.read(load)
        logs = [lj.log_json(r) for r in rows]
        kept = [(k, v) for k, v in (("project", project), ("task", task)) if v]
        pages = max(1, -(-total // PAGE_SIZE))
        return self.ui.render(
            page,
            page.request,
            "review.html",
            logs=logs,
            total=total,
            project=project or "",
            task=task or "",
            projects=projects,
            tasks=tasks,
            number=number,
            pages=pages,
            prev_url=_url(kept, number - 1) if number > 1 else None,
            next_url=_url(kept, number + 1) if number < pages else None,
            can_decide=page.viewer.can("logs_admin"),
            done=q.get("decided", ""),
            decision=q.get("decision", ""),
            back=urlencode([*kept, ("page", str(number))]),
        )

    async def decide(self, page: Page) -> Response:
        """One log (a row's button: `one=approve:<id>`) or the selection (`bulk=approve` with the
        checked `ids`)."""
        form = page.form
        one, bulk = form.get("one"), form.get("bulk")
        if one:
            action, _, log_id = one.partition(":")
            ids = [log_id]
        else:
            action, ids = bulk, list(dict.fromkeys(form.getlist("ids")))
        decision = DECISIONS.get(action)
        if decision is None or not ids or not all(ids):
            raise ApiError(
                422, "validation_error", "Choose Approve or Reject, and at least one log."
            )
        if len(ids) > MAX_BULK:
            raise ApiError(422, "validation_error", f"At most {MAX_BULK} logs at once.")
        label = page.label_for("logs_admin")
        count = await self.ui.logs.views.decide(page.org, ids, decision, label)
        if one and not count:
            raise ApiError(404, "not_found", "No such log in your org.")
        back = form.get("back")
        target = f"/ui/review?{back}&" if back else "/ui/review?"
        return RedirectResponse(
            target + urlencode([("decided", str(count)), ("decision", decision)]), 303
        )


def _url(kept: list[tuple[str, str]], number: int) -> str:
    return "/ui/review?" + urlencode([*kept, ("page", str(number))])
