"""Realistic OTLP agent traces for tests and benchmarks: an agent root, LLM and tool spans.

Builds ExportTraceServiceRequest messages the way OTel GenAI instrumentations shape them
(~15 attributes a span), so tests and `bench/` measure the payloads users really send.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet-20241022", "gemini-1.5-flash")
TOOLS = ("search_web", "read_file", "send_email", "lookup_customer", "run_sql")


def kv(key: str, value: Any) -> KeyValue:
    v = AnyValue()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, list):
        v.array_value.values.extend(AnyValue(string_value=str(x)) for x in value)
    else:
        v.string_value = str(value)
    return KeyValue(key=key, value=v)


def agent_trace(
    spans_per_trace: int = 8,
    rng: random.Random | None = None,
    start_ns: int = 1_700_000_000_000_000_000,
) -> list[Span]:
    """One trace: an `invoke_agent` root, then alternating LLM `chat` and `execute_tool` spans."""
    rng = rng or random.Random()
    trace_id = rng.randbytes(16)
    root_id = rng.randbytes(8)
    agent = rng.choice(("support-triage", "invoice-extractor", "research-assistant"))
    spans: list[Span] = []
    t = start_ns
    for i in range(spans_per_trace - 1):
        span_id = rng.randbytes(8)
        dur = rng.randint(50, 2000) * 1_000_000
        if i % 2 == 0:
            model = rng.choice(MODELS)
            attrs = [
                kv("gen_ai.operation.name", "chat"),
                kv("gen_ai.provider.name", "openai"),
                kv("gen_ai.request.model", model),
                kv("gen_ai.response.model", model),
                kv("gen_ai.response.id", f"chatcmpl-{rng.getrandbits(64):x}"),
                kv("gen_ai.usage.input_tokens", rng.randint(200, 4000)),
                kv("gen_ai.usage.output_tokens", rng.randint(20, 800)),
                kv("gen_ai.usage.cache_read.input_tokens", rng.randint(0, 100)),
                kv("gen_ai.request.temperature", 0.2),
                kv("gen_ai.request.max_tokens", 1024),
                kv("gen_ai.response.finish_reasons", ["stop"]),
                kv("server.address", "api.openai.com"),
                kv("server.port", 443),
                kv("gen_ai.agent.name", agent),
                kv("gen_ai.conversation.id", f"conv-{rng.getrandbits(32):x}"),
            ]
            name = f"chat {model}"
            kind = Span.SPAN_KIND_CLIENT
        else:
            tool = rng.choice(TOOLS)
            attrs = [
                kv("gen_ai.operation.name", "execute_tool"),
                kv("gen_ai.tool.name", tool),
                kv("gen_ai.tool.call.id", f"call_{rng.getrandbits(48):x}"),
                kv("gen_ai.tool.type", "function"),
                kv(
                    "gen_ai.tool.call.arguments",
                    json.dumps({"query": f"q{rng.random():.6f}", "limit": 5}),
                ),
                kv("gen_ai.tool.call.result", json.dumps({"ok": True, "items": rng.randint(0, 9)})),
                kv("gen_ai.agent.name", agent),
                kv("code.function", f"tools.{tool}"),
                kv("thread.id", rng.randint(1, 64)),
                kv("gen_ai.conversation.id", f"conv-{rng.getrandbits(32):x}"),
                kv("app.tenant", "acme"),
                kv("app.region", "eu-west-1"),
                kv("app.version", "1.4.2"),
                kv("retry.count", 0),
                kv("cache.hit", False),
            ]
            name = f"execute_tool {tool}"
            kind = Span.SPAN_KIND_INTERNAL
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=span_id,
                parent_span_id=root_id,
                name=name,
                kind=kind,
                start_time_unix_nano=t,
                end_time_unix_nano=t + dur,
                attributes=attrs,
                status=Status(code=Status.STATUS_CODE_OK),
            )
        )
        t += dur
    spans.append(
        Span(
            trace_id=trace_id,
            span_id=root_id,
            name=f"invoke_agent {agent}",
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=start_ns,
            end_time_unix_nano=t,
            attributes=[
                kv("gen_ai.operation.name", "invoke_agent"),
                kv("gen_ai.agent.name", agent),
                kv("gen_ai.agent.id", f"agent-{agent}"),
                kv("gen_ai.conversation.id", f"conv-{rng.getrandbits(32):x}"),
                kv("gen_ai.provider.name", "openai"),
                kv("user.id", f"user-{rng.randint(1, 500)}"),
                kv("session.id", f"sess-{rng.getrandbits(32):x}"),
                kv("app.tenant", "acme"),
                kv("app.region", "eu-west-1"),
                kv("app.version", "1.4.2"),
                kv("deployment.environment", "prod"),
                kv("input.value", "Classify the customer's email and draft a reply."),
                kv("output.value", "Category: billing. Draft reply attached."),
                kv("gen_ai.request.model", "gpt-4o-mini"),
                kv("agent.step_count", spans_per_trace - 1),
            ],
            status=Status(code=Status.STATUS_CODE_OK),
        )
    )
    return spans


def export_request(
    spans: list[Span],
    service_name: str = "agent-service",
    extra_resource: dict[str, Any] | None = None,
) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", service_name))
    for k, v in (
        extra_resource or {"telemetry.sdk.language": "python", "host.name": "worker-1"}
    ).items():
        rs.resource.attributes.append(kv(k, v))
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai_v2"
    ss.scope.version = "2.1b0"
    ss.spans.extend(spans)
    return req


def request_of(n_spans: int, seed: int | None = None) -> ExportTraceServiceRequest:
    """A request of about `n_spans` spans made of whole agent traces of 8 spans."""
    rng = random.Random(seed if seed is not None else os.getpid())
    spans: list[Span] = []
    while len(spans) < n_spans:
        spans.extend(agent_trace(8, rng))
    return export_request(spans[:n_spans])
