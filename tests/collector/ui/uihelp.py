"""A web UI on a real store in a temp dir, served in process by Starlette's TestClient: two orgs
with a read and an admin key each, the evals and alerts features as the service builds them.

Tests insert rows with `tests/collector/store/test_query.py`'s helpers and sign in through the
form, as a browser would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.testclient import TestClient

from collector.alerts import store as alerts_store
from collector.alerts.api import AlertsApi
from collector.auth.keys import Authenticator
from collector.evals.api import EvalsApi
from collector.evals.config import EvalsConfig
from collector.outbound.config import OutboundPolicy
from collector.outbound.outbox import Outbox
from collector.secretbox import SecretBox
from collector.store.writer import Store
from collector.ui.app import UiApp
from collector.ui.config import UiConfig
from processors.output_rules.engine import RuleEngine
from tests.stores import service_store

KEYS = {
    ("acme", "read"): "al_read_aaaa0002_" + "2" * 40,
    ("acme", "admin"): "al_admin_aaaa0003_" + "3" * 40,
    ("acme", "ingest"): "al_live_aaaa0001_" + "1" * 40,
    ("globex", "read"): "al_read_bbbb0002_" + "5" * 40,
    ("globex", "admin"): "al_admin_bbbb0003_" + "6" * 40,
}
READ, ADMIN = KEYS[("acme", "read")], KEYS[("acme", "admin")]


@dataclass
class Ui:
    client: TestClient
    store: Store
    app: UiApp
    logs: EvalsApi

    def sign_in(self, key: str, client: TestClient | None = None) -> TestClient:
        c = client or self.client
        form = c.get("/ui/sign-in")
        token = csrf_of(form.text, "/ui/sign-in")
        r = c.post("/ui/sign-in", data={"key": key, "csrf": token}, follow_redirects=False)
        assert r.status_code == 303, r.text
        return c

    def csrf(self, path: str = "/ui/keys") -> str:
        return csrf_of(self.client.get(path).text)


def csrf_of(html: str, action: str | None = None) -> str:
    """The CSRF token of the page's first form (of the form posting to `action`, if given)."""
    if action is not None:
        html = html.split(f'action="{action}"', 1)[1]
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:2000]
    return m.group(1)


@contextmanager
def ui_app(
    tmp_path: Path, session_hours: float = 12.0, now: datetime | None = None
) -> Iterator[Ui]:
    with service_store(tmp_path) as store:
        auth = Authenticator(store)
        auth.load()
        for (org, scope), key in KEYS.items():
            auth.declare(org, scope, key)  # type: ignore[arg-type]
        box = SecretBox.open(tmp_path)
        outbox = Outbox(store)  # decisions queue callbacks; nothing delivers them here
        outbox.create_tables()
        logs = EvalsApi(
            store,
            auth,
            RuleEngine(),
            config=EvalsConfig(),
            box=box,
            policy=OutboundPolicy(),
            media_root=tmp_path / "media",
            outbox=outbox,
        )
        logs.create_tables()
        store.call(alerts_store.create_tables)
        alerts = AlertsApi(store, auth, box=box)
        app = UiApp(
            store=store,
            auth=auth,
            logs=logs,
            alerts=alerts,
            config=UiConfig(session_hours=session_hours),
            box=box,
            clock=lambda: now or datetime.now(UTC),
        )
        starlette = Starlette(routes=[*logs.routes(), *alerts.routes(), *app.routes()])
        with TestClient(starlette) as client:
            yield Ui(client, store, app, logs)
