"""Normalisation of hand-built spans into `SPAN_NORMALISED` columns: OTel GenAI (current and
deprecated names), events, the cache-token trap, errors and excerpts.

Each test builds a `Batch` directly, runs `NormaliseProcessor` and checks the column values;
the framework dialects are in test_normalise_frameworks.py.
"""

from __future__ import annotations

import json

from collector.model import Batch, Signal
from collector.store.schema import SPAN_NORMALISED
from processors.normalise.span import NormaliseConfig, NormaliseProcessor, normalised_columns
from tests.processors.normalise.normalisehelp import one, run, span


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
