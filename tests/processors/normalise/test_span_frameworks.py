"""Normalisation of hand-built spans in the instrumentation-library dialects of SEMCONV.md:
OpenInference, Traceloop/OpenLLMetry, Vercel AI SDK and Langfuse, each checked column by column
(agent frameworks' own dialects: test_normalise_agents.py).
"""

from __future__ import annotations

import json

from tests.processors.normalise.normalisehelp import one, run, span


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
