"""Normalisation and cost of spans recorded from the real instrumentation packages (fixtures/otlp).

Each fixture is one tool-calling run against `fake_openai.py`, so every token count is known; the
files come from `tests/fixtures/record.py` and need no instrumentation package here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collector.model import Signal
from collector.pipeline import process_payload
from collector.prices.layers import stack
from processors.cost import CostConfig, CostProcessor
from processors.normalise.span import NormaliseConfig, NormaliseProcessor
from tests.fixtures import fake_openai

OTLP = Path(__file__).resolve().parent.parent / "fixtures" / "otlp"
RESPONSE_MODEL = fake_openai.MODEL  # gpt-4o-mini-2024-07-18, an alias of gpt-4o-mini
REQUEST_MODEL = "gpt-4o-mini"
T0, T1 = fake_openai.TURNS

# gpt-4o-mini in genai-prices, USD per 1M tokens: input 0.15, cache read 0.075, output and
# reasoning 0.6. Turn 0: 120 in (20 cached), 30 out (8 reasoning); turn 1: 180 in (64), 25 out (5).
COST_T0 = (100 * 0.15 + 20 * 0.075 + 30 * 0.6) / 1e6  # 3.45e-05
COST_T1 = (116 * 0.15 + 64 * 0.075 + 25 * 0.6) / 1e6  # 3.72e-05
# Without cache details the whole input is priced at the input rate.
COST_T0_PLAIN = (120 * 0.15 + 30 * 0.6) / 1e6  # 3.6e-05
COST_T1_PLAIN = (180 * 0.15 + 25 * 0.6) / 1e6  # 4.2e-05


@dataclass(frozen=True)
class Expect:
    """What agentledger must derive from one fixture."""

    counts: dict[str, int]
    agent_names: tuple[str, ...] = ()
    details: bool = True  # the library reports cache and reasoning tokens
    unreported_reasoning: tuple[int, ...] = ()  # turns whose reasoning count the library drops
    cost_source: str = "computed"
    request_model: str | None = REQUEST_MODEL
    tool_args: Any = None  # JSON-equal expected value (str when the library sends plain text)
    tool_call_id: str | None = None
    content: bool = True  # prompts/completions captured
    aggregate_agent: str | None = None  # the agent span that repeats its LLM children's usage
    ids_on_children: bool = False  # session / run id stamped on every span of the run
    agent_output: bool = False  # the root agent span carries the final answer


WEATHER_ARGS = {"city": "Paris"}
WEATHER = "sunny, 21 C"  # what the recorded tool returned

EXPECT: dict[str, Expect] = {
    "openai_v2": Expect({"llm": 2}, details=False, content=False),
    "openai_v2_content": Expect({"llm": 2}, details=False),
    "openinference_openai": Expect({"llm": 2}, request_model=None),
    "openinference_langchain": Expect(
        {"agent": 1, "llm": 2, "tool": 1, "other": 3},
        agent_names=("weather_agent",),
        request_model=None,
        tool_args="Paris",  # LangChain hands the tool callback the single argument's value
    ),
    "openai_agents": Expect(
        {"agent": 2, "llm": 2, "tool": 1, "other": 3},
        agent_names=("weather_agent", "weather_workflow"),
        request_model=None,
        tool_args=WEATHER_ARGS,
    ),
    "pydantic_ai": Expect(
        {"agent": 1, "llm": 2, "tool": 1},
        agent_names=("weather_agent",),
        cost_source="provided",  # operation.cost, from genai-prices
        tool_args=WEATHER_ARGS,
        tool_call_id=fake_openai.TOOL_CALL_ID,
        aggregate_agent="weather_agent",
        ids_on_children=True,
        agent_output=True,
    ),
    # OpenLLMetry's stream wrapper keeps cached tokens but not the reasoning count.
    "openllmetry": Expect({"llm": 2}, unreported_reasoning=(1,)),
    "traceloop": Expect(
        {"agent": 1, "llm": 2, "tool": 1},
        agent_names=("weather_workflow",),
        tool_args=WEATHER_ARGS,
        agent_output=True,
    ),
    "crewai": Expect(
        {"agent": 2, "llm": 2, "tool": 1},
        agent_names=("weather_agent", "weather_workflow"),  # the agent's role, the crew's name
        request_model=None,
        tool_args=WEATHER_ARGS,
        agent_output=True,
    ),
}


def _fixtures() -> list[str]:
    return sorted(p.stem for p in OTLP.glob("*.json"))


RECORDED = [name for name in EXPECT if (OTLP / f"{name}.json").exists()]

# Known normalisation gaps, kept visible: strict, so fixing one makes its test say so.
# (test, fixture) → why agentledger cannot yet derive what the test asserts (strict xfail).
KNOWN_GAPS: dict[tuple[str, str], str] = {}


def with_gaps(test: str, names: list[str]) -> list[Any]:
    return [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[(test, n)]))
        if (test, n) in KNOWN_GAPS
        else n
        for n in names
    ]


def _chains() -> dict[Signal, list[Any]]:
    return {
        Signal.TRACES: [
            NormaliseProcessor(NormaliseConfig()),
            CostProcessor(CostConfig(), stack(None)),
        ]
    }


_ROWS: dict[str, list[dict[str, Any]]] = {}


def rows(name: str) -> list[dict[str, Any]]:
    """The fixture's spans as stored, in start order."""
    if name not in _ROWS:
        payload = (OTLP / f"{name}.json").read_bytes()
        table, rejected = process_payload(Signal.TRACES, "t", payload, "json", _chains())
        assert rejected == 0
        _ROWS[name] = sorted(table.to_pylist(), key=lambda r: r["start_time_unix_nano"])
    return _ROWS[name]


def of_type(name: str, span_type: str) -> list[dict[str, Any]]:
    return [r for r in rows(name) if r["span_type"] == span_type]


def as_json(text: str | None) -> Any:
    assert text is not None
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- the fixture set -----------------------------------------------------------------------


def test_every_fixture_has_expectations() -> None:
    assert _fixtures(), "no recorded fixture"
    assert set(_fixtures()) <= set(EXPECT), "a fixture without expectations here"
    # The libraries that install and run offline; a missing one means a recording was lost.
    assert {"openai_v2", "openinference_openai", "openai_agents", "pydantic_ai"} <= set(RECORDED)


def test_versions_lists_every_fixture() -> None:
    listed = {
        line.split(":", 1)[0]
        for line in (OTLP / "VERSIONS.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert set(_fixtures()) <= listed


@pytest.mark.parametrize("name", _fixtures())
def test_fixture_holds_no_local_path_or_secret(name: str) -> None:
    text = (OTLP / f"{name}.json").read_text()
    for needle in ("/root", "/home/", "/work/", "sk-", "Bearer"):
        assert needle not in text
    doc = json.loads(text)
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(span["traceId"]) == 32 and int(span["traceId"], 16)  # hex, as OTLP/JSON wants
    assert len(span["spanId"]) == 16


# --- per-fixture derivations ---------------------------------------------------------------


@pytest.mark.parametrize("name", RECORDED)
def test_span_types(name: str) -> None:
    found: dict[str, int] = {}
    for r in rows(name):
        found[r["span_type"]] = found.get(r["span_type"], 0) + 1
    assert found == EXPECT[name].counts


@pytest.mark.parametrize("name", RECORDED)
def test_llm_spans_model_provider_tokens(name: str) -> None:
    expect = EXPECT[name]
    llms = of_type(name, "llm")
    assert len(llms) == 2
    for i, (r, turn) in enumerate(zip(llms, (T0, T1), strict=True)):
        assert r["model"] == RESPONSE_MODEL
        assert r["request_model"] == expect.request_model
        assert r["provider"] == "openai"
        assert r["input_tokens"] == turn["prompt"]  # inclusive of the cached tokens
        assert r["output_tokens"] == turn["completion"]  # inclusive of reasoning
        if expect.details:
            assert r["cache_read_tokens"] == turn["cached"]
            reasoning = None if i in expect.unreported_reasoning else turn["reasoning"]
            assert r["reasoning_tokens"] == reasoning
        else:
            assert r["cache_read_tokens"] is None
            assert r["reasoning_tokens"] is None
        assert r["cache_write_tokens"] in (None, 0)
        assert r["usage_is_aggregate"] is False
        assert r["is_error"] is False
        assert r["error_type"] is None


@pytest.mark.parametrize("name", RECORDED)
def test_llm_cost(name: str) -> None:
    expect = EXPECT[name]
    costs = (COST_T0, COST_T1) if expect.details else (COST_T0_PLAIN, COST_T1_PLAIN)
    for r, cost in zip(of_type(name, "llm"), costs, strict=True):
        assert r["cost_source"] == expect.cost_source
        assert r["cost_usd"] == pytest.approx(cost, rel=1e-9)
        if expect.cost_source == "computed":
            # gpt-4o-mini is genai-prices' to price (the shipped book only corrects it).
            assert r["price_source"] == "genai-prices"
            assert r["price_book_version"].startswith("genai-prices ")


@pytest.mark.parametrize("name", RECORDED)
def test_usage_is_not_double_counted(name: str) -> None:
    """Summing every non-aggregate span gives exactly what the server billed: two turns."""
    counted = [r for r in rows(name) if not r["usage_is_aggregate"]]
    assert sum(r["input_tokens"] or 0 for r in counted) == T0["prompt"] + T1["prompt"]
    assert sum(r["output_tokens"] or 0 for r in counted) == T0["completion"] + T1["completion"]
    assert sum(r["cost_usd"] or 0 for r in counted) == pytest.approx(
        sum(r["cost_usd"] for r in of_type(name, "llm"))
    )
    for r in rows(name):
        if r["span_type"] != "llm":
            assert r["cost_usd"] is None
            assert r["cost_source"] is None


@pytest.mark.parametrize("name", [n for n in RECORDED if EXPECT[n].aggregate_agent])
def test_agent_span_usage_is_aggregate(name: str) -> None:
    (agent,) = [
        r for r in of_type(name, "agent") if r["agent_name"] == EXPECT[name].aggregate_agent
    ]
    assert agent["usage_is_aggregate"] is True
    assert agent["input_tokens"] == T0["prompt"] + T1["prompt"]
    assert agent["output_tokens"] == T0["completion"] + T1["completion"]
    assert agent["cache_read_tokens"] == T0["cached"] + T1["cached"]
    assert agent["reasoning_tokens"] == T0["reasoning"] + T1["reasoning"]


@pytest.mark.parametrize("name", with_gaps("tool", RECORDED))
def test_tool_span(name: str) -> None:
    expect = EXPECT[name]
    tools = of_type(name, "tool")
    if expect.tool_args is None:
        assert tools == []
        return
    (tool,) = tools
    assert tool["tool_name"] == fake_openai.TOOL_NAME
    assert as_json(tool["tool_args"]) == expect.tool_args
    result = as_json(tool["tool_result"])
    if isinstance(result, dict):  # LangChain sends the whole ToolMessage
        assert result["data"]["content"] == WEATHER
        assert result["data"]["tool_call_id"] == fake_openai.TOOL_CALL_ID
    else:
        assert result == WEATHER
    if expect.tool_call_id:
        assert tool["tool_call_id"] == expect.tool_call_id
    assert tool["is_error"] is False
    assert tool["model"] is None and tool["input_tokens"] is None


@pytest.mark.parametrize("name", RECORDED)
def test_agent_names(name: str) -> None:
    agents = of_type(name, "agent")
    assert sorted(r["agent_name"] for r in agents) == sorted(EXPECT[name].agent_names)
    for r in agents:
        assert r["is_error"] is False
        assert r["cost_usd"] is None
    if EXPECT[name].agent_output:
        (root,) = [r for r in agents if not r["parent_span_id"]]
        assert (root["output_text"] or "").strip('"').startswith(fake_openai.FINAL_ANSWER)


@pytest.mark.parametrize("name", RECORDED)
def test_content(name: str) -> None:
    first, second = of_type(name, "llm")
    if not EXPECT[name].content:
        assert first["input_text"] is None and second["output_text"] is None
        return
    assert "What is the weather in Paris?" in (first["input_text"] or "")
    assert fake_openai.TOOL_NAME in (first["output_text"] or "")
    assert "sunny, 21 C" in (second["input_text"] or "")
    assert fake_openai.FINAL_ANSWER in (second["output_text"] or "")


@pytest.mark.parametrize("name", [n for n in RECORDED if EXPECT[n].ids_on_children])
def test_run_and_session_ids_on_every_span(name: str) -> None:
    found = {(r["run_id_external"], r["session_id"]) for r in rows(name)}
    assert len(found) == 1
    ((run_id, session_id),) = found
    assert run_id and session_id and run_id != session_id


@pytest.mark.parametrize("name", RECORDED)
def test_one_trace_one_root(name: str) -> None:
    found = rows(name)
    roots = [r for r in found if not r["parent_span_id"]]
    if EXPECT[name].counts.get("agent"):
        assert len({r["trace_id"] for r in found}) == 1
        (root,) = roots
        assert root["span_type"] == "agent"
    else:  # a bare client makes one trace per call
        assert len(roots) == 2
