"""Normalisation of hand-built spans in every dialect of SEMCONV.md into `SPAN_NORMALISED` columns.

Each test builds a `Batch` directly, runs `NormaliseProcessor` and checks the column values.
"""

from __future__ import annotations

import json
from typing import Any

from collector.model import Batch, Signal
from collector.schema import SPAN_NORMALISED
from processors.normalise import NormaliseConfig, NormaliseProcessor, normalised_columns


def span(
    attrs: dict[str, Any],
    name: str = "span",
    *,
    parent: str | None = "p" * 16,
    status: int = 0,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {"attrs": attrs, "name": name, "parent": parent, "status": status, "events": events}


def run(*spans: dict[str, Any], excerpt_chars: int = 2000) -> list[dict[str, Any]]:
    batch = Batch(
        signal=Signal.TRACES,
        org="o",
        columns={
            "name": [s["name"] for s in spans],
            "kind": [1 for _ in spans],
            "status_code": [s["status"] for s in spans],
            "status_message": [None for _ in spans],
            "parent_span_id": [s["parent"] for s in spans],
            "service_name": ["svc" for _ in spans],
        },
        attributes=[s["attrs"] for s in spans],
        resources=[{"service.name": "svc"} for _ in spans],
        events=[s["events"] or [] for s in spans],
    )
    out = NormaliseProcessor(NormaliseConfig(excerpt_chars=excerpt_chars)).process(batch)
    return [{c.name: out.columns[c.name][i] for c in SPAN_NORMALISED} for i in range(len(out))]


def one(attrs: dict[str, Any], name: str = "span", **kw: Any) -> dict[str, Any]:
    return run(span(attrs, name, **kw))[0]


def test_empty_columns_helper_covers_every_normalised_column() -> None:
    cols = normalised_columns(3)
    assert set(cols) == {c.name for c in SPAN_NORMALISED}
    assert all(v == [None, None, None] for v in cols.values())


def test_logs_batch_is_returned_unchanged() -> None:
    batch = Batch(signal=Signal.LOGS, org="o", columns={"body": ["x"]}, attributes=[{}])
    assert NormaliseProcessor(NormaliseConfig()).process(batch) is batch
    assert "span_type" not in batch.columns


def test_otel_genai_current_chat_span() -> None:
    row = one(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 200,
            "gen_ai.usage.cache_read.input_tokens": 800,
            "gen_ai.usage.reasoning.output_tokens": 50,
            "gen_ai.conversation.id": "conv-1",
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "What is 2+2?"}]}]
            ),
            "gen_ai.output.messages": [
                {"role": "assistant", "parts": [{"type": "text", "content": "4"}]}
            ],
            "gen_ai.system_instructions": [{"type": "text", "content": "Be brief."}],
        },
        "chat gpt-4o",
    )
    assert row["span_type"] == "llm"
    assert row["operation"] == "chat"
    assert (row["request_model"], row["response_model"]) == ("gpt-4o", "gpt-4o-2024-08-06")
    assert row["model"] == "gpt-4o-2024-08-06"
    assert row["provider"] == "openai"
    # cached tokens are a subset of input in GenAI semconv: input stays 1000
    assert (row["input_tokens"], row["cache_read_tokens"]) == (1000, 800)
    assert (row["output_tokens"], row["reasoning_tokens"]) == (200, 50)
    assert row["usage_is_aggregate"] is False
    assert row["session_id"] == "conv-1"
    assert row["input_text"] == "Be brief.\nuser: What is 2+2?"
    assert row["output_text"] == "assistant: 4"
    assert row["is_error"] is False
    assert row["cost_usd"] is None


def test_otel_genai_deprecated_names_and_legacy_provider() -> None:
    row = one(
        {
            "gen_ai.system": "az.ai.openai",
            "gen_ai.request.model": "gpt-35-turbo",
            "gen_ai.usage.prompt_tokens": 30,
            "gen_ai.usage.completion_tokens": 7,
        },
        "chat gpt-35-turbo",
    )
    assert row["span_type"] == "llm"  # model attribute on a non-run span
    assert row["provider"] == "azure.ai.openai"
    assert (row["input_tokens"], row["output_tokens"]) == (30, 7)


def test_legacy_providers_vertex_gemini_xai_are_mapped() -> None:
    rows = run(
        span({"gen_ai.system": "vertex_ai", "gen_ai.request.model": "gemini-1.5-pro"}),
        span({"gen_ai.system": "gemini", "gen_ai.request.model": "gemini-2.0-flash"}),
        span({"gen_ai.system": "xai", "gen_ai.request.model": "grok-3"}),
    )
    assert [r["provider"] for r in rows] == ["gcp.vertex_ai", "gcp.gemini", "x_ai"]


def test_otel_events_carry_content() -> None:
    details = {
        "name": "gen_ai.client.inference.operation.details",
        "time_unix_nano": 1,
        "attributes": {
            "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"hi"}]}]',
            "gen_ai.output.messages": [
                {"role": "assistant", "parts": [{"type": "text", "content": "hello"}]}
            ],
        },
    }
    row = one({"gen_ai.operation.name": "chat"}, "chat m", events=[details])
    assert (row["input_text"], row["output_text"]) == ("user: hi", "assistant: hello")

    legacy = [
        {"name": "gen_ai.user.message", "time_unix_nano": 1, "attributes": {"content": "q?"}},
        {
            "name": "gen_ai.choice",
            "time_unix_nano": 2,
            "attributes": {"message": '{"role":"assistant","content":"a."}'},
        },
    ]
    row = one({"gen_ai.operation.name": "chat"}, "chat m", events=legacy)
    assert (row["input_text"], row["output_text"]) == ("user: q?", "assistant: a.")


def test_openinference_llm_with_flattened_messages_and_cost() -> None:
    row = one(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "claude-3-5-sonnet-20241022",
            "llm.provider": "anthropic",
            "llm.token_count.prompt": 1200,
            "llm.token_count.completion": 300,
            "llm.token_count.prompt_details.cache_read": 1000,
            "llm.token_count.prompt_details.cache_write": 100,
            "llm.cost.total": 0.0123,
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "You are terse.",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.contents.0.message_content.type": "text",
            "llm.input_messages.1.message.contents.0.message_content.text": "Hello",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "Hi.",
            "session.id": "s-9",
            "user.id": 42,
        },
        "ChatAnthropic",
    )
    assert row["span_type"] == "llm"
    assert row["model"] == "claude-3-5-sonnet-20241022"
    assert (row["input_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == (
        1200,
        1000,
        100,
    )
    assert (row["cost_usd"], row["cost_source"]) == (0.0123, "provided")
    assert row["input_text"] == "system: You are terse.\nuser: Hello"
    assert row["output_text"] == "assistant: Hi."
    assert (row["session_id"], row["user_id"]) == ("s-9", "42")


def test_openinference_tool_args_from_input_value_never_tool_parameters() -> None:
    row = one(
        {
            "openinference.span.kind": "TOOL",
            "tool.name": "get_weather",
            "tool.parameters": '{"type":"object","properties":{"city":{"type":"string"}}}',
            "input.value": '{"city":"Paris"}',
            "output.value": "sunny",
        },
        "get_weather",
    )
    assert row["span_type"] == "tool"
    assert row["tool_name"] == "get_weather"
    assert row["tool_args"] == '{"city":"Paris"}'
    assert row["tool_result"] == "sunny"


def test_openinference_parentless_chain_is_a_run_nested_chain_is_not() -> None:
    rows = run(
        span({"openinference.span.kind": "CHAIN"}, "Crew.kickoff", parent=None),
        span({"openinference.span.kind": "CHAIN"}, "RunnableSequence"),
    )
    assert [r["span_type"] for r in rows] == ["agent", "other"]
    assert rows[0]["agent_name"] == "Crew"
    assert rows[1]["agent_name"] is None


def test_openinference_metadata_session() -> None:
    row = one({"openinference.span.kind": "AGENT", "metadata": '{"thread_id": "t-1"}'}, "agent")
    assert row["session_id"] == "t-1"


def test_traceloop_legacy_llm_span() -> None:
    row = one(
        {
            "llm.request.type": "chat",
            "gen_ai.system": "Anthropic",
            "gen_ai.request.model": "claude-3-5-haiku-20241022",
            "gen_ai.usage.prompt_tokens": 500,
            "gen_ai.usage.completion_tokens": 40,
            "gen_ai.usage.cache_read_input_tokens": 400,
            "gen_ai.usage.cache_creation_input_tokens": 50,
            "llm.usage.total_tokens": 540,
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "Summarise this.",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "Done.",
            "traceloop.association.properties.user_id": "u-7",
        },
        "anthropic.chat",
    )
    assert row["span_type"] == "llm"
    assert row["operation"] == "chat"
    assert row["provider"] == "anthropic"
    # OpenLLMetry's prompt_tokens already include the cache (total = 500 + 40)
    assert row["input_tokens"] == 500
    assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (400, 50)
    assert row["input_text"] == "user: Summarise this."
    assert row["output_text"] == "assistant: Done."
    assert row["user_id"] == "u-7"


def test_traceloop_new_workflow_and_tool() -> None:
    rows = run(
        span(
            {
                "traceloop.span.kind": "workflow",
                "traceloop.entity.name": "research",
                "traceloop.entity.input": '{"args": ["topic"], "kwargs": {}}',
            },
            "research.workflow",
            parent=None,
        ),
        span(
            {
                "traceloop.span.kind": "tool",
                "traceloop.entity.name": "search",
                "traceloop.entity.input": '{"args": [], "kwargs": {"q": "otel"}}',
                "traceloop.entity.output": '"3 results"',
                "gen_ai.conversation.id": "c-3",
            },
            "search.tool",
        ),
    )
    assert rows[0]["span_type"] == "agent"
    assert rows[0]["agent_name"] == "research"
    assert rows[1]["span_type"] == "tool"
    assert rows[1]["tool_name"] == "search"
    assert rows[1]["tool_args"] == '{"q":"otel"}'  # the call's kwargs, not Traceloop's envelope
    assert rows[1]["session_id"] == "c-3"


def test_vercel_ai_sdk_outer_span_is_aggregate_and_do_generate_is_llm() -> None:
    rows = run(
        span(
            {
                "ai.operationId": "ai.generateText",
                "ai.telemetry.functionId": "support-bot",
                "ai.model.id": "gpt-4o-mini",
                "ai.model.provider": "openai.chat",
                "ai.usage.promptTokens": 300,
                "ai.usage.completionTokens": 60,
                "ai.telemetry.metadata.sessionId": "sess-a",
                "ai.telemetry.metadata.userId": "user-a",
            },
            "ai.generateText",
            parent=None,
        ),
        span(
            {
                "ai.operationId": "ai.generateText.doGenerate",
                "ai.model.id": "gpt-4o-mini",
                "ai.model.provider": "openai.chat",
                "ai.usage.inputTokens": 300,
                "ai.usage.outputTokens": 60,
                "ai.usage.cachedInputTokens": 100,
                "ai.prompt.messages": json.dumps(
                    [{"role": "user", "content": [{"type": "text", "text": "Where is my order?"}]}]
                ),
                "ai.response.text": "On its way.",
            },
            "ai.generateText.doGenerate",
        ),
        span(
            {
                "ai.operationId": "ai.toolCall",
                "ai.toolCall.name": "lookup_order",
                "ai.toolCall.id": "call_1",
                "ai.toolCall.args": '{"id": 7}',
                "ai.toolCall.result": '{"status": "shipped"}',
            },
            "ai.toolCall",
        ),
    )
    outer, call, tool = rows
    assert outer["span_type"] == "agent"
    assert outer["agent_name"] == "support-bot"
    assert outer["usage_is_aggregate"] is True
    assert (outer["session_id"], outer["user_id"]) == ("sess-a", "user-a")
    assert call["span_type"] == "llm"
    assert call["usage_is_aggregate"] is False
    assert call["provider"] == "openai"
    assert (call["input_tokens"], call["cache_read_tokens"]) == (300, 100)
    assert call["input_text"] == "user: Where is my order?"
    assert call["output_text"] == "On its way."
    assert (tool["span_type"], tool["tool_name"], tool["tool_call_id"]) == (
        "tool",
        "lookup_order",
        "call_1",
    )
    assert tool["tool_args"] == '{"id": 7}'


def test_vercel_anthropic_provider_metadata_cache_is_additive() -> None:
    row = one(
        {
            "ai.operationId": "ai.streamText.doStream",
            "ai.model.id": "claude-sonnet-4-20250514",
            "ai.model.provider": "anthropic.messages",
            "ai.usage.promptTokens": 20,
            "ai.usage.completionTokens": 5,
            "ai.response.providerMetadata": json.dumps(
                {"anthropic": {"cacheCreationInputTokens": 0, "cacheReadInputTokens": 980}}
            ),
        }
    )
    assert row["provider"] == "anthropic"
    assert (row["input_tokens"], row["cache_read_tokens"]) == (1000, 980)


def test_ai_sdk_otel_invoke_agent_root_is_aggregate() -> None:
    rows = run(
        span(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "planner",
                "gen_ai.usage.input_tokens": 900,
                "gen_ai.usage.output_tokens": 90,
            },
            "invoke_agent gpt-4o",
            parent=None,
        ),
        span({"gen_ai.operation.name": "agent_step", "gen_ai.usage.input_tokens": 900}, "step 1"),
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 900,
                "gen_ai.usage.output_tokens": 90,
            },
            "chat gpt-4o",
        ),
    )
    assert [r["span_type"] for r in rows] == ["agent", "other", "llm"]
    assert [r["usage_is_aggregate"] for r in rows] == [True, True, False]
    assert rows[0]["agent_name"] == "planner"


def test_langfuse_usage_details_input_excludes_cache() -> None:
    row = one(
        {
            "langfuse.observation.type": "generation",
            "langfuse.observation.model.name": "gpt-4.1",
            "langfuse.observation.usage_details": json.dumps(
                {
                    "input": 200,
                    "output": 40,
                    "input_cached_tokens": 800,
                    "output_reasoning_tokens": 10,
                }
            ),
            "langfuse.observation.cost_details": '{"input": 0.001, "output": 0.0004}',
            "langfuse.observation.input": '[{"role": "user", "content": "Plan a trip"}]',
            "langfuse.observation.output": '{"role": "assistant", "content": "Sure."}',
            "langfuse.session.id": "lf-sess",
            "langfuse.user.id": "lf-user",
        },
        "generation",
    )
    assert row["span_type"] == "llm"
    assert row["model"] == "gpt-4.1"
    # Langfuse's `input` key excludes the cache: stored input is the inclusive total
    assert (row["input_tokens"], row["cache_read_tokens"]) == (1000, 800)
    assert (row["output_tokens"], row["reasoning_tokens"]) == (50, 10)
    assert row["cost_source"] == "provided"
    assert abs(row["cost_usd"] - 0.0014) < 1e-12
    assert row["input_text"] == "user: Plan a trip"
    assert row["output_text"] == "assistant: Sure."
    assert (row["session_id"], row["user_id"]) == ("lf-sess", "lf-user")


def test_langfuse_error_level() -> None:
    row = one({"langfuse.observation.type": "span", "langfuse.observation.level": "ERROR"})
    assert row["is_error"] is True
    assert row["span_type"] == "other"


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


def test_cache_trap_subset_cannot_exceed_total() -> None:
    row = one(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": 50,
            "gen_ai.usage.cache_read.input_tokens": 950,
        }
    )
    assert row["input_tokens"] == 1000


def test_errors_status_error_type_and_exception_event() -> None:
    exception = {
        "name": "exception",
        "time_unix_nano": 1,
        "attributes": {"exception.type": "ValueError", "exception.message": "bad"},
    }
    rows = run(
        span({"gen_ai.operation.name": "chat"}, status=2, events=[exception]),
        span({"gen_ai.operation.name": "chat", "error.type": "rate_limited"}),
        span({"openinference.span.kind": "CHAIN"}, status=1, events=[exception]),
    )
    assert [(r["is_error"], r["error_type"]) for r in rows] == [
        (True, "ValueError"),
        (True, "rate_limited"),
        (False, None),  # LangGraph control flow: exception recorded, span OK
    ]


def test_excerpts_are_truncated() -> None:
    (row,) = run(span({"gen_ai.operation.name": "chat", "input.value": "x" * 50}), excerpt_chars=10)
    assert row["input_text"] == "x" * 10


def test_other_span_has_no_tool_or_agent_fields() -> None:
    row = one({"http.method": "GET"}, "GET /health")
    assert row["span_type"] == "other"
    assert row["agent_name"] is None and row["tool_name"] is None
    assert row["input_tokens"] is None and row["usage_is_aggregate"] is False
