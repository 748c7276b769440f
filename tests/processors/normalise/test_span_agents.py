"""Normalisation of hand-built spans in agent frameworks' own dialects (SEMCONV.md):
pydantic-ai/Logfire, OpenAI Agents, CrewAI, Google ADK and Strands, column by column.
"""

from __future__ import annotations

import json

from collector.model import Batch, Signal
from processors.normalise.span import NormaliseConfig, NormaliseProcessor
from tests.processors.normalise.normalisehelp import one, run, span


def test_pydantic_ai_run_llm_tool_and_pending_span_dropped() -> None:
    rows = run(
        span(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "weather_agent",
                "agent_name": "weather_agent",
                "model_name": "gpt-4o",
                "gen_ai.agent.call.id": "run-123",
                "gen_ai.conversation.id": "conv-5",
                "gen_ai.aggregated_usage.input_tokens": 2000,
                "gen_ai.aggregated_usage.output_tokens": 150,
                "final_result": "It is sunny.",
                "logfire.msg": "weather_agent run",
            },
            "invoke_agent weather_agent",
            parent=None,
        ),
        span({"logfire.span_type": "pending_span"}, "invoke_agent weather_agent"),
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "openai",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 75,
                "operation.cost": 0.00325,
                "gen_ai.agent.call.id": "run-123",
            },
            "chat gpt-4o",
        ),
        span(
            {
                "gen_ai.tool.name": "get_weather",
                "gen_ai.tool.call.id": "call_9",
                "tool_arguments": '{"city": "Oslo"}',
                "tool_response": "sunny",
                "logfire.msg": "running tool: get_weather",
            },
            "running tool",
        ),
    )
    assert len(rows) == 3  # the pending_span placeholder is gone
    agent, llm, tool = rows
    assert agent["span_type"] == "agent"
    assert agent["agent_name"] == "weather_agent"
    assert agent["run_id_external"] == "run-123"
    assert (agent["input_tokens"], agent["output_tokens"]) == (2000, 150)
    assert agent["usage_is_aggregate"] is True
    assert agent["output_text"] == "It is sunny."
    assert agent["session_id"] == "conv-5"
    assert (llm["span_type"], llm["cost_usd"], llm["cost_source"]) == ("llm", 0.00325, "provided")
    assert llm["run_id_external"] == "run-123"
    assert (tool["span_type"], tool["tool_name"], tool["tool_call_id"]) == (
        "tool",
        "get_weather",
        "call_9",
    )
    assert (tool["tool_args"], tool["tool_result"]) == ('{"city": "Oslo"}', "sunny")


def test_pending_span_filter_keeps_order_of_other_columns() -> None:
    batch = Batch(
        signal=Signal.TRACES,
        org="o",
        columns={"name": ["a", "b", "c"], "span_id": ["1", "2", "3"]},
        attributes=[{}, {"logfire.span_type": "pending_span"}, {"logfire.span_type": "span"}],
        resources=[{}, {}, {}],
        events=[[], [], []],
    )
    out = NormaliseProcessor(NormaliseConfig()).process(batch)
    assert out.columns["span_id"] == ["1", "3"]
    assert out.columns["span_type"] == ["other", "other"]


def test_pydantic_ai_v1_run_usage_on_gen_ai_usage_is_aggregate() -> None:
    row = one(
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 10},
        "agent run",
        parent=None,
    )
    assert (row["span_type"], row["usage_is_aggregate"], row["input_tokens"]) == ("agent", True, 10)


def test_logfire_openai_agents_dialect() -> None:
    rows = run(
        span(
            {
                "logfire.msg_template": "OpenAI Agents trace: {name}",
                "name": "Triage",
                "group_id": "g1",
            },
            "OpenAI Agents trace: {name}",
            parent=None,
        ),
        span(
            {"logfire.msg_template": "Agent run: {name!r}", "name": "Helper"},
            "Agent run: {name!r}",
        ),
        span(
            {
                "logfire.msg_template": "Function: {name}",
                "name": "lookup",
                "input": '{"q": 1}',
                "output": "found",
                "logfire.level_num": 17,
                "error": "boom",
            },
            "Function: {name}",
        ),
        span(
            {
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4.1",
                "gen_ai.response.model": "gpt-4.1",
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 3,
            },
            "Responses API with {gen_ai.request.model!r}",
        ),
    )
    trace, agent, tool, llm = rows
    assert (trace["span_type"], trace["agent_name"], trace["session_id"]) == (
        "agent",
        "Triage",
        "g1",
    )
    assert (agent["span_type"], agent["agent_name"]) == ("agent", "Helper")
    assert (tool["span_type"], tool["tool_name"], tool["tool_args"]) == (
        "tool",
        "lookup",
        '{"q": 1}',
    )
    assert tool["is_error"] is True
    assert (llm["span_type"], llm["model"], llm["input_tokens"]) == ("llm", "gpt-4.1", 12)


def test_openai_agents_via_openinference() -> None:
    rows = run(
        span({"openinference.span.kind": "AGENT"}, "Agent workflow", parent=None),
        span(
            {
                "openinference.span.kind": "LLM",
                "llm.system": "openai",
                "llm.model_name": "o4-mini",
                "llm.token_count.prompt": 100,
                "llm.token_count.completion": 400,
                "llm.token_count.completion_details.reasoning": 300,
            },
            "response",
        ),
        span({"openinference.span.kind": "TOOL"}, "handoff to Billing"),
    )
    assert rows[0]["agent_name"] == "Agent workflow"
    assert (rows[1]["provider"], rows[1]["reasoning_tokens"]) == ("openai", 300)
    assert rows[2]["span_type"] == "tool"


def test_crewai_openllmetry_framework_provider_is_ignored() -> None:
    rows = run(
        span(
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "crewai"},
            "crewai.workflow",
            parent=None,
        ),
        span(
            {
                "traceloop.span.kind": "agent",
                "gen_ai.agent.name": "Researcher",
                "gen_ai.usage.input_tokens": 5000,
                "gen_ai.usage.output_tokens": 500,
            },
            "Researcher.agent",
        ),
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "crewai",
                "gen_ai.request.model": "gpt-4o-mini",
            },
            "gpt-4o-mini.llm",
        ),
    )
    workflow, agent, llm = rows
    assert (workflow["span_type"], workflow["provider"], workflow["agent_name"]) == (
        "agent",
        None,
        "crewai",
    )
    assert (agent["span_type"], agent["agent_name"], agent["usage_is_aggregate"]) == (
        "agent",
        "Researcher",
        True,
    )
    assert (llm["span_type"], llm["provider"]) == ("llm", "openai")  # from the model name


def test_crewai_openinference_tool_name_from_span_name() -> None:
    row = one({"openinference.span.kind": "TOOL"}, "web_search.run")
    assert row["tool_name"] == "web_search"


def test_google_adk_spans() -> None:
    rows = run(
        span({}, "invocation", parent=None),
        span(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "root_agent",
                "gen_ai.conversation.id": "adk-session",
            },
            "invoke_agent root_agent",
        ),
        span(
            {
                "gen_ai.system": "gcp.vertex.agent",
                "gen_ai.request.model": "gemini-2.5-flash",
                "gen_ai.usage.input_tokens": 1500,
                "gen_ai.usage.output_tokens": 80,
                "gcp.vertex.agent.invocation_id": "e-42",
                "gcp.vertex.agent.session_id": "adk-session",
                "gcp.vertex.agent.llm_request": json.dumps(
                    {
                        "model": "gemini-2.5-flash",
                        "contents": [{"role": "user", "parts": [{"text": "Hi ADK"}]}],
                    }
                ),
                "gcp.vertex.agent.llm_response": json.dumps(
                    {
                        "content": {"role": "model", "parts": [{"text": "Hello!"}]},
                        "usage_metadata": {"cached_content_token_count": 1024},
                    }
                ),
                "server.address": "generativelanguage.googleapis.com",
            },
            "call_llm",
        ),
        span(
            {
                "gen_ai.tool.name": "get_time",
                "gen_ai.tool.call.id": "adk-call-1",
                "gen_ai.tool.type": "FunctionTool",
                "gcp.vertex.agent.tool_call_args": '{"tz": "UTC"}',
                "gcp.vertex.agent.tool_response": '{"time": "12:00"}',
            },
            "execute_tool get_time",
        ),
    )
    invocation, agent, llm, tool = rows
    assert invocation["span_type"] == "agent"
    assert (agent["span_type"], agent["agent_name"], agent["session_id"]) == (
        "agent",
        "root_agent",
        "adk-session",
    )
    assert llm["span_type"] == "llm"
    assert llm["provider"] == "gcp.gemini"  # the framework name is ignored; host decides
    assert llm["run_id_external"] == "e-42"
    assert (llm["input_tokens"], llm["cache_read_tokens"]) == (1500, 1024)
    assert llm["input_text"] == "user: Hi ADK"
    assert llm["output_text"] == "model: Hello!"
    assert (tool["tool_name"], tool["tool_args"], tool["tool_result"]) == (
        "get_time",
        '{"tz": "UTC"}',
        '{"time": "12:00"}',
    )


def test_strands_agents_usage_is_additive_and_aggregate_on_invoke_agent() -> None:
    usage = {
        "gen_ai.usage.prompt_tokens": 100,
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.completion_tokens": 20,
        "gen_ai.usage.output_tokens": 20,
        "gen_ai.usage.total_tokens": 1020,
        "gen_ai.usage.cache_read_input_tokens": 900,
        "gen_ai.usage.cache_write_input_tokens": 0,
    }
    rows = run(
        span(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.system": "strands-agents",
                "gen_ai.agent.name": "Strands Agents",
                "gen_ai.request.model": "us.anthropic.claude-sonnet-4-20250514-v1:0",
                "langfuse.observation.type": "span",
                **usage,
            },
            "invoke_agent Strands Agents",
            parent=None,
        ),
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "strands-agents",
                "gen_ai.request.model": "us.anthropic.claude-sonnet-4-20250514-v1:0",
                **usage,
            },
            "chat",
        ),
        span(
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "calculator",
                "gen_ai.tool.call.id": "t1",
                "gen_ai.tool.status": "error",
            },
            "execute_tool calculator",
        ),
    )
    agent, chat, tool = rows
    assert (agent["span_type"], agent["usage_is_aggregate"]) == ("agent", True)
    assert chat["span_type"] == "llm"
    assert chat["provider"] == "aws.bedrock"  # strands-agents is the framework
    # Strands passes Bedrock's exclusive inputTokens: 100 fresh + 900 cache read = 1000
    assert (chat["input_tokens"], chat["cache_read_tokens"]) == (1000, 900)
    assert (tool["is_error"], tool["tool_name"]) == (True, "calculator")
