"""The web UI in a real browser: headless Chromium (the distribution's, driven by Playwright, no
browser download) against a real `agentledger serve`.

An OTel SDK trace becomes a run whose waterfall shows the model and the tool's arguments; a
flagged `/api/logs` output is approved from the Review page with the workspace token (the API
shows the decision, the callback arrives); a read key sees no Approve and its forged POST is
refused; a POST without the CSRF token is refused; another org's run is a 404 page. Every page
is saved as a screenshot at 1280 px and 390 px (`$AGENTLEDGER_ARTIFACTS`, else a temp dir).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.e2e.server import KEYS, Server, make_server
from tests.fixtures.receiver import Receiver

pytestmark = pytest.mark.browser

INGEST, READ, ADMIN = (KEYS[("acme", s)] for s in ("ingest", "read", "admin"))
OTHER_READ = KEYS[("globex", "read")]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}


def chromium() -> str | None:
    for path in ("/usr/bin/chromium", shutil.which("chromium") or ""):
        if path and os.access(path, os.X_OK):
            return path
    return None


def _missing(what: str) -> None:
    # Outside CI a developer without a browser skips; in CI a missing browser is a failure.
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required in CI (.ci/run installs chromium)")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright")
    path = chromium()
    if path is None:
        _missing("chromium (/usr/bin/chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    extra = (
        "outbound: {allow_private: true}\n"
        "evals: {callback_base_delay_s: 0.2, callback_max_delay_s: 0.5}\n"
    )
    s = make_server(tmp_path_factory.mktemp("ui"), extra).start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            assert s.stop() == 0


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("AGENTLEDGER_ARTIFACTS")
    folder = Path(where) / "ui" if where else tmp_path_factory.mktemp("ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def send_trace(server: Server) -> str:
    """An agent run with an LLM call and a tool call, through the OTel SDK's HTTP exporter;
    the run's id once the server has derived it."""
    exporter = OTLPSpanExporter(endpoint=f"{server.base_url}/v1/traces", headers=auth(INGEST))
    provider = TracerProvider(resource=Resource.create({"service.name": "support-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("ui-e2e")
    with tracer.start_as_current_span("invoke_agent triage") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        root.set_attribute("gen_ai.agent.name", "triage")
        with tracer.start_as_current_span("chat gpt-4o") as llm:
            llm.set_attribute("gen_ai.operation.name", "chat")
            llm.set_attribute("gen_ai.request.model", "gpt-4o")
            llm.set_attribute("gen_ai.usage.input_tokens", 1200)
            llm.set_attribute("gen_ai.usage.output_tokens", 80)
            time.sleep(0.02)
        with tracer.start_as_current_span("execute_tool lookup_order") as tool:
            tool.set_attribute("gen_ai.operation.name", "execute_tool")
            tool.set_attribute("gen_ai.tool.name", "lookup_order")
            tool.set_attribute("gen_ai.tool.call.arguments", '{"order_id": "A-1042"}')
            tool.set_attribute("gen_ai.tool.call.result", '{"status": "shipped"}')
            time.sleep(0.01)
    provider.shutdown()

    def listed() -> str | None:
        r = httpx.get(f"{server.base_url}/api/runs", headers=auth(READ))
        runs = [x for x in r.json()["runs"] if x["workflow_name"] == "triage"]
        return runs[0]["id"] if runs and runs[0]["status"] != "running" else None

    run_id = wait_for(listed)
    assert run_id, "the run was not derived"
    return str(run_id)


def flagged_log(server: Server, receiver: Receiver) -> tuple[str, str]:
    """A rule that flags refunds, a log it flags (with a decision callback), and the workspace
    token: (log id, token)."""
    base = server.base_url
    rule = {"name": "No refunds", "type": "keyword_forbidden", "value": "refund"}
    r = httpx.post(f"{base}/api/rules", headers=auth(ADMIN), json=rule)
    assert r.status_code == 201, r.text
    token = httpx.post(f"{base}/api/settings/rotate-token", headers=auth(ADMIN)).json()[
        "webhookToken"
    ]
    body = {
        "project": "support",
        "task": "reply",
        "output": "Sure, I issued a refund of $40 to your card.",
        "input": "Where is my order A-1042?",
        "callbackUrl": receiver.url("/decided"),
        "callbackEvents": "decisions",
    }
    r = httpx.post(f"{base}/api/logs", headers=auth(INGEST), json=body)
    assert r.status_code == 200, r.text
    log_id = str(r.json()["id"])

    def verdict() -> str | None:
        got = httpx.get(f"{base}/api/logs/{log_id}/status", headers=auth(INGEST)).json()
        return None if got["status"] == "pending" else str(got["status"])

    assert wait_for(verdict) == "flagged"
    return log_id, str(token)


class Pages:
    """A browser context signed in with some keys, saving a screenshot of each page it opens."""

    def __init__(self, browser: Any, server: Server, shots: Path, name: str) -> None:
        self.context = browser.new_context(
            viewport=dict(zip(("width", "height"), WIDTHS["desktop"], strict=True))
        )
        self.page = self.context.new_page()
        self.base = server.base_url
        self.shots = shots
        self.name = name

    def sign_in(self, key: str) -> None:
        self.page.goto(f"{self.base}/ui/sign-in")
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()

    def nav(self, name: str) -> Any:
        menu = self.page.get_by_role("navigation", name="Main")
        return menu.get_by_role("link", name=name, exact=True)

    def open(self, path: str) -> Any:
        response = self.page.goto(f"{self.base}{path}")
        return response

    def shoot(self, label: str) -> None:
        for width_name, (w, h) in WIDTHS.items():
            self.page.set_viewport_size({"width": w, "height": h})
            self.page.screenshot(
                path=str(self.shots / f"{self.name}-{label}-{width_name}.png"), full_page=True
            )
        self.page.set_viewport_size({"width": WIDTHS["desktop"][0], "height": WIDTHS["desktop"][1]})

    def csrf(self) -> str:
        value = self.page.locator('input[name="csrf"]').first.get_attribute("value")
        assert value
        return str(value)

    def close(self) -> None:
        self.context.close()


def test_a_traced_run_is_listed_and_its_waterfall_shows_the_model_and_the_tool(
    browser: Any, server: Server, shots: Path
) -> None:
    run_id = send_trace(server)
    ui = Pages(browser, server, shots, "read")
    try:
        ui.page.goto(f"{server.base_url}/")  # / → /ui/ → the sign-in form
        assert "/ui/sign-in" in ui.page.url
        ui.shoot("sign-in")
        ui.page.get_by_label("API key").fill(READ)
        ui.page.get_by_role("button", name="Sign in").click()
        assert ui.page.url.endswith("/ui/")
        assert ui.page.get_by_role("heading", name="Overview").is_visible()
        for link in ("Runs", "Workflows", "Review", "Alerts"):
            assert ui.nav(link).count() == 1
        assert ui.page.locator("svg.chart").count() == 2
        ui.shoot("overview")

        ui.nav("Runs").click()
        row = ui.page.locator("table.runs tbody tr", has_text="triage")
        assert row.count() == 1
        ui.shoot("runs")
        row.get_by_role("link").click()
        assert ui.page.url.endswith(f"/ui/runs/{run_id}")
        waterfall = ui.page.locator("ol.wf-steps")
        assert waterfall.locator("li").count() == 3  # agent, LLM call, tool call
        llm = waterfall.locator("li.k-llm")
        assert "gpt-4o" in llm.locator("summary").inner_text()
        tool = waterfall.locator("li.k-tool")
        assert "lookup_order" in tool.locator("summary").inner_text()
        tool.locator("summary").click()  # <details> opens without any script
        assert '"order_id": "A-1042"' in tool.locator("dl.step").inner_text()
        llm.locator("summary").click()
        details = llm.locator("dl.step").inner_text()
        assert "in 1,200, out 80" in details and "cost_source: computed" in details
        ui.shoot("run")

        ui.nav("Workflows").click()
        ui.page.get_by_role("link", name="triage").click()
        assert ui.page.get_by_role("heading", name="Tools").is_visible()
        assert ui.page.locator("td", has_text="lookup_order").count() == 1
        ui.shoot("workflow")
        ui.nav("Workflows").click()
        ui.shoot("workflows")
        ui.nav("Alerts").click()
        ui.shoot("alerts-read")
        # Keys need an admin key: not in the menu, and refused when opened.
        assert ui.page.get_by_role("link", name="Keys").count() == 0
        assert ui.open("/ui/keys").status == 403
        ui.shoot("keys-refused")
    finally:
        ui.close()


def test_review_approve_with_the_workspace_token(
    browser: Any, server: Server, shots: Path, receiver: Receiver
) -> None:
    log_id, token = flagged_log(server, receiver)
    ui = Pages(browser, server, shots, "workspace")
    try:
        ui.sign_in(token)
        assert ui.page.url.endswith("/ui/review")  # the first page a workspace token may open
        ui.nav("Review").click()
        item = ui.page.locator("li.log", has_text="issued a refund")
        assert item.count() == 1
        assert "No refunds" in item.inner_text()  # the rule that triggered, and why
        assert "Where is my order A-1042?" in item.inner_text()
        ui.shoot("review")

        # A POST without the CSRF token is refused and decides nothing.
        forged = ui.context.request.post(
            f"{server.base_url}/ui/review", form={"one": f"approve:{log_id}"}
        )
        assert forged.status == 403
        assert "CSRF" in forged.text()
        got = httpx.get(f"{server.base_url}/api/logs/{log_id}", headers=auth(ADMIN)).json()
        assert got["humanDecision"] is None

        item.get_by_role("button", name="Approve", exact=True).click()
        assert ui.page.get_by_role("status").inner_text().startswith("1 log approved")
        ui.shoot("review-approved")
        got = httpx.get(f"{server.base_url}/api/logs/{log_id}", headers=auth(ADMIN)).json()
        assert got["humanDecision"] == "approved"
        assert got["decidedBy"] == token.split("_")[0]  # "wh-<id>": the token, never its secret

        calls = wait_for(lambda: [r for r in receiver.requests if r.path == "/decided"])
        assert calls, "the decision callback did not arrive"
        event = json.loads(calls[0].body)
        assert (event["event"], event["humanDecision"]) == ("log.decision", "approved")
        assert event["decidedBy"] == got["decidedBy"]
    finally:
        ui.close()


def test_a_read_key_cannot_decide_and_another_orgs_run_is_not_found(
    browser: Any, server: Server, shots: Path, receiver: Receiver
) -> None:
    base = server.base_url
    r = httpx.post(
        f"{base}/api/logs",
        headers=auth(INGEST),
        json={"project": "support", "output": "We will refund you.", "sync": True},
    )
    assert r.json()["status"] == "flagged", r.text
    log_id = r.json()["id"]
    runs = httpx.get(f"{base}/api/runs", headers=auth(READ)).json()["runs"]
    assert runs, "the first test's run is missing"

    ui = Pages(browser, server, shots, "read-review")
    try:
        ui.sign_in(READ)
        ui.nav("Review").click()
        assert ui.page.locator("li.log", has_text="We will refund you.").count() == 1
        assert ui.page.get_by_role("button", name="Approve").count() == 0
        ui.shoot("review-read-only")
        # The session's own CSRF token does not make a read key able to decide.
        forged = ui.context.request.post(
            f"{base}/ui/review", form={"csrf": ui.csrf(), "one": f"approve:{log_id}"}
        )
        assert forged.status == 403
        got = httpx.get(f"{base}/api/logs/{log_id}", headers=auth(ADMIN)).json()
        assert got["humanDecision"] is None
    finally:
        ui.close()

    other = Pages(browser, server, shots, "globex")
    try:
        other.sign_in(OTHER_READ)
        response = other.open(f"/ui/runs/{runs[0]['id']}")
        assert response.status == 404
        assert other.page.get_by_role("heading", name="Not found").is_visible()
        other.shoot("other-org-run")
    finally:
        other.close()


def test_admin_pages_and_sign_out(browser: Any, server: Server, shots: Path) -> None:
    ui = Pages(browser, server, shots, "admin")
    try:
        ui.sign_in(ADMIN)
        assert ui.page.url.endswith("/ui/alerts")
        ui.shoot("alerts-admin")
        ui.nav("Keys").click()
        ui.page.get_by_label("Scope").select_option("read")
        ui.page.get_by_label("Name").fill("grafana")
        ui.page.get_by_role("button", name="Create key").click()
        secret = ui.page.locator("code.key").inner_text()
        assert re.fullmatch(r"al_read_[0-9a-f]{8}_[0-9a-f]{40}", secret)
        ui.shoot("keys-created")
        # The new key works on the API; revoked from the page, it no longer does.
        assert httpx.get(f"{server.base_url}/api/runs", headers=auth(secret)).status_code == 200
        prefix = secret.rsplit("_", 1)[0]
        ui.page.get_by_role("button", name=f"Revoke key {prefix}").click()
        assert httpx.get(f"{server.base_url}/api/runs", headers=auth(secret)).status_code == 401
        ui.page.get_by_role("button", name="Sign out").click()
        assert "/ui/sign-in" in ui.page.url
        assert ui.open("/ui/keys").url.endswith("/ui/sign-in?next=/ui/keys")
    finally:
        ui.close()
