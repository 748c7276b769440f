"""Cost against the real server: priced tools in a run's cost, detail, workflow total and a cost
alert; EUR and GBP orgs' /v1/track costs with the FX rate and its date (shipped, then fetched
from a configured URL and kept across a restart); and `agentledger prices update` run from the
installed console script (in CI, the built wheel's), whose book a running and a restarted
server price with.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.e2e.server import KEYS, Server, agentledger_command, make_server
from tests.e2e.test_roi_runs import wait_for
from tests.fixtures.receiver import Answer, Receiver
from tests.promtext import metric

INGEST, READ, ADMIN = (KEYS[("acme", s)] for s in ("ingest", "read", "admin"))
GLOBEX_INGEST, GLOBEX_ADMIN = KEYS[("globex", "ingest")], KEYS[("globex", "admin")]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- tools -----------------------------------------------------------------------------------

TOOLS = """processors:
  normalise: {}
  cost:
    tools:
      web_search: {per_call: 0.01}
      scrape: {per_unit: 0.002, unit_attribute: scrape.pages}
alerts:
  evaluation_interval_s: 1
  rules: [{org: acme, name: Costly run, condition: run_cost, threshold: 0.015}]
"""


def send_run(
    server: Server, with_tools: bool, model: str = "gpt-4o-mini", tokens_in: int = 1000
) -> str:
    """An agent run with one LLM call (by default gpt-4o-mini, 1,000 in, 100 out: $0.00021),
    and with a paid search and a scrape of 5 pages; through the SDK's OTLP/HTTP exporter.
    Returns its run id."""
    exporter = OTLPSpanExporter(endpoint=f"{server.base_url}/v1/traces", headers=bearer(INGEST))
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-prices"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("e2e")
    with tracer.start_as_current_span("invoke_agent researcher") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        root.set_attribute("gen_ai.agent.name", "researcher")
        with tracer.start_as_current_span(f"chat {model}") as llm:
            llm.set_attribute("gen_ai.operation.name", "chat")
            llm.set_attribute("gen_ai.provider.name", "openai")
            llm.set_attribute("gen_ai.request.model", model)
            llm.set_attribute("gen_ai.usage.input_tokens", tokens_in)
            llm.set_attribute("gen_ai.usage.output_tokens", 100)
        for name, attributes in (("web_search", {}), ("scrape", {"scrape.pages": 5})):
            if not with_tools:
                continue
            with tracer.start_as_current_span(f"execute_tool {name}") as tool:
                tool.set_attribute("gen_ai.operation.name", "execute_tool")
                tool.set_attribute("gen_ai.tool.name", name)
                for key, value in attributes.items():
                    tool.set_attribute(key, value)
        context = root.get_span_context()
    provider.shutdown()
    return f"{context.trace_id:032x}{context.span_id:016x}"


def detail(server: Server, run_id: str) -> dict[str, Any] | None:
    r = httpx.get(f"{server.base_url}/api/runs/{run_id}", headers=bearer(READ))
    if r.status_code != 200 or r.json()["run"]["status"] != "success":
        return None
    body: dict[str, Any] = r.json()
    return body


def test_priced_tools_count_in_run_cost_detail_workflow_and_alert(tmp_path: Path) -> None:
    server = make_server(tmp_path, TOOLS).start()
    try:
        paid = send_run(server, with_tools=True)
        plain = send_run(server, with_tools=False)
        run = wait_for(lambda: detail(server, paid), "the run with tools")["run"]
        assert (run["cost_usd"], run["llm_cost_usd"], run["tool_cost_usd"]) == (
            "0.020210", "0.000210", "0.020000",
        )  # fmt: skip
        tools = {t["tool_name"]: t for t in run["tool_events"]}
        assert tools["web_search"]["cost_usd"] == "0.010000"  # per call
        assert tools["scrape"]["cost_usd"] == "0.010000"  # 5 pages x $0.002
        assert tools["scrape"]["cost_source"] == "computed"
        assert tools["scrape"]["price"]["source"] == "tool-config"
        (llm,) = run["llm_calls"]
        assert (llm["cost_usd"], llm["price"]["source"]) == ("0.000210", "genai-prices")

        other = wait_for(lambda: detail(server, plain), "the run without tools")["run"]
        assert (other["cost_usd"], other["tool_cost_usd"]) == ("0.000210", "0.000000")

        # The alert on run cost fires for the run whose tools took it over the threshold.
        def alert_events() -> list[dict[str, Any]]:
            r = httpx.get(f"{server.base_url}/api/alert-events", headers=bearer(READ))
            found: list[dict[str, Any]] = r.json()["alert_events"]
            return found

        (event,) = wait_for(alert_events, "the cost alert")
        assert event["run_id"] == paid and event["triggered_value"] == pytest.approx(0.02021)
        now = datetime.now(UTC)
        window = {
            "from": (now - timedelta(hours=1)).isoformat(),
            "to": (now + timedelta(minutes=5)).isoformat(),
        }
        r = httpx.get(f"{server.base_url}/api/workflows", headers=bearer(READ), params=window)
        (workflow,) = r.json()["workflows"]
        assert (workflow["workflow_name"], workflow["total_cost_usd"]) == (
            "researcher", "0.020420",
        )  # fmt: skip
        time.sleep(2)  # a second evaluation finds nothing new
        assert len(alert_events()) == 1
    finally:
        assert server.stop() == 0
    assert "Traceback" not in "".join(server.output)


# --- currencies ------------------------------------------------------------------------------

TASK = {
    "agent_id": "writer", "task_type": "email_classification", "outcome": "success",
    "model": "gpt-4o-mini", "tokens_in": 1_000_000, "tokens_out": 1_000_000,
}  # fmt: skip  # 0.15 + 0.60 = $0.75


def track(server: Server, key: str) -> dict[str, Any]:
    r = httpx.post(f"{server.base_url}/v1/track", headers=bearer(key), json=TASK)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def set_currencies(server: Server) -> None:
    for key, currency in ((ADMIN, "EUR"), (GLOBEX_ADMIN, "GBP")):
        r = httpx.patch(
            f"{server.base_url}/v1/settings", headers=bearer(key), json={"currency": currency}
        )
        assert r.status_code == 200, r.text


def ecb_xml(day: str, usd: str, gbp: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<gesmes:Envelope '
        'xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" '
        'xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">\n'
        f"<Cube><Cube time='{day}'><Cube currency='USD' rate='{usd}'/>"
        f"<Cube currency='GBP' rate='{gbp}'/></Cube></Cube>\n</gesmes:Envelope>\n"
    ).encode()


def test_eur_and_gbp_orgs_get_computed_costs_with_the_rate_and_its_date(tmp_path: Path) -> None:
    server = make_server(tmp_path).start()
    try:
        set_currencies(server)
        eur, gbp = track(server, INGEST), track(server, GLOBEX_INGEST)
    finally:
        assert server.stop() == 0
    # No fx_rates of their own: the shipped ECB reference table of 2024-06-28.
    assert (eur["currency"], eur["resolved_cost_source"]) == ("EUR", "computed")
    assert eur["agent_cost"] == pytest.approx(0.75 / 1.0705, abs=1e-6)
    assert eur["fx"]["date"] == "2024-06-28" and eur["fx"]["rate"] == pytest.approx(1 / 1.0705)
    assert eur["fx"]["source"].startswith("European Central Bank")
    assert (gbp["currency"], gbp["resolved_cost_source"]) == ("GBP", "computed")
    assert gbp["agent_cost"] == pytest.approx(0.75 * 0.84638 / 1.0705, abs=1e-6)
    assert gbp["fx"]["date"] == "2024-06-28"

    # With prices.fx.url: the ECB file of a later day, fetched and used...
    with Receiver(lambda _req: Answer(body=ecb_xml("2026-11-30", "1.25", "0.8"))) as ecb:
        fx = f"prices:\n  fx: {{url: '{ecb.url('/eurofxref-daily.xml')}'}}\n"
        server = make_server(tmp_path, fx).start()
        try:
            wait_for(
                lambda: metric(
                    httpx.get(f"{server.base_url}/metrics").text,
                    "agentledger_fx_rates_info",
                    date="2026-11-30",
                ),
                "the fetched FX rates",
            )
            eur, gbp = track(server, INGEST), track(server, GLOBEX_INGEST)
        finally:
            assert server.stop() == 0
    assert (eur["agent_cost"], eur["fx"]["rate"], eur["fx"]["date"]) == (0.6, 0.8, "2026-11-30")
    assert (gbp["agent_cost"], gbp["fx"]["rate"], gbp["fx"]["date"]) == (0.48, 0.64, "2026-11-30")

    # ...and kept: a restart with the source gone still converts with it.
    server = make_server(tmp_path, fx).start()
    try:
        again = track(server, GLOBEX_INGEST)
    finally:
        assert server.stop() == 0
    assert (again["agent_cost"], again["fx"]["date"]) == (0.48, "2026-11-30")


# --- prices update from an installed package -------------------------------------------------


def installed_data(command: list[str]) -> Path:
    """The folder of the shipped data (`agentledger_config`) of the installation `command`
    runs: site-packages for a wheel (as in CI), the checkout's config/ for an editable one."""
    python = Path(command[0]).parent / "python"
    where = "import agentledger_config as c, os; print(os.path.dirname(c.__file__))"
    found = subprocess.run(
        [str(python), "-c", where], check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()
    return Path(found)


def test_prices_update_from_the_console_script_prices_in_a_running_and_restarted_server(
    tmp_path: Path,
) -> None:
    command = agentledger_command()  # the installed console script (in CI: the built wheel's)
    if "-m" in command:
        pytest.skip("no agentledger console script is installed beside this Python")
    litellm = tmp_path / "litellm.json"
    entry = {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 2e-06,
             "output_cost_per_token": 8e-06}  # fmt: skip
    litellm.write_text(json.dumps({"acme-frontier-1": entry}))
    config = "prices: {retry_interval_s: 1}\n"  # the book file is looked at every second
    server = make_server(tmp_path, config)
    task = {**TASK, "model": "acme-frontier-1", "tokens_out": 0}

    def priced(server: Server) -> dict[str, Any]:
        r = httpx.post(f"{server.base_url}/v1/track", headers=bearer(INGEST), json=task)
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    shipped = installed_data(command)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in shipped.rglob("*.json")}
    server.start()
    try:
        unknown = priced(server)
        assert (unknown["agent_cost"], unknown["resolved_cost_source"]) == (None, "none")
        done = subprocess.run(
            [*command, "prices", "update", "--from", str(litellm),
             "--config", str(server.config_path)],
            capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        book = server.data_dir / "prices.json"
        assert str(book) in done.stdout
        assert "acme-frontier-1" in book.read_text()
        # Never into the installed package.
        after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in shipped.rglob("*.json")}
        assert after == before
        running = wait_for(
            lambda: (body := priced(server))["resolved_cost_source"] == "computed" and body,
            "the running server to read the operator's book",
        )
        assert running["agent_cost"] == 2.0
    finally:
        assert server.stop() == 0
    server.start()  # restarted: reads the same book
    try:
        restarted = priced(server)
        assert (restarted["agent_cost"], restarted["resolved_cost_source"]) == (2.0, "computed")
        # Spans too: the decode worker processes load the same book.
        run = send_run(server, False, "acme-frontier-1", tokens_in=1_000_000)
        (llm,) = wait_for(lambda: detail(server, run), "the traced run")["run"]["llm_calls"]
        assert (llm["cost_usd"], llm["price"]["source"]) == ("2.000800", "operator")
    finally:
        assert server.stop() == 0
