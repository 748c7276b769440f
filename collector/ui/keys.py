"""The Keys page (admin): the org's keys by prefix with their last use, a new key (its secret shown
once, on the answer to the form, never in a URL), and revocation.

Through the code of the admin key API (`collector/auth/api.py`, `collector/auth/keys.py`): the
same checks of a new key's scope and name, the same refusal to revoke a key of the config file.
"""

from __future__ import annotations

import asyncio
from typing import cast

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from collector.auth.api import key_request_problems, revoke_key
from collector.model import SCOPES, Scope
from collector.ui.app import Page, UiApp


def routes(ui: UiApp) -> list[Route]:
    pages = KeysPage(ui)
    return [
        Route("/ui/keys", ui.page(pages.list, "admin"), methods=["GET"]),
        Route("/ui/keys", ui.page(pages.create, "admin", write=True), methods=["POST"]),
        Route(
            "/ui/keys/{key_id}/revoke",
            ui.page(pages.revoke, "admin", write=True),
            methods=["POST"],
        ),
    ]


class KeysPage:
    def __init__(self, ui: UiApp) -> None:
        self.ui = ui

    def _page(
        self,
        page: Page,
        status: int = 200,
        *,
        created: str | None = None,
        problems: list[dict[str, str]] | None = None,
    ) -> Response:
        return self.ui.render(
            page,
            page.request,
            "keys.html",
            status,
            keys=self.ui.auth.list_keys(page.org),
            scopes=SCOPES,
            created=created,
            problems=problems or [],
            revoked=page.query.get("revoked", ""),
            # A refused form keeps what was typed; after a new key, the form starts afresh.
            name=page.form.get("name") if problems else "",
            scope=(page.form.get("scope") if problems else "") or "read",
        )

    async def list(self, page: Page) -> Response:
        return self._page(page)

    async def create(self, page: Page) -> Response:
        scope, name = page.form.get("scope"), page.form.get("name").strip()
        problems = key_request_problems(scope, name)
        if problems:
            return self._page(page, 422, problems=problems)
        checked = cast(Scope, scope)  # one of SCOPES: key_request_problems said so
        key, _ = await asyncio.to_thread(self.ui.auth.create_key, page.org, checked, name)
        # The answer to the POST shows the secret once; the page is not cached (no-store).
        return self._page(page, 201, created=key)

    async def revoke(self, page: Page) -> Response:
        record = await revoke_key(self.ui.auth, page.org, str(page.request.path_params["key_id"]))
        return RedirectResponse(f"/ui/keys?revoked={record.prefix}", 303)
