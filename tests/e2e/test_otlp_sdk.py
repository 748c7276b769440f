"""The real OpenTelemetry SDK exporters (gRPC, HTTP/protobuf, gzip) against a real server."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter

from tests.e2e.server import KEYS, Server

INGEST = KEYS[("acme", "ingest")]


def _send_agent_trace(exporter: SpanExporter, service: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("e2e")
    with tracer.start_as_current_span("invoke_agent triage") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        root.set_attribute("gen_ai.agent.name", "triage")
        with tracer.start_as_current_span("chat gpt-4o") as llm:
            llm.set_attribute("gen_ai.operation.name", "chat")
            llm.set_attribute("gen_ai.request.model", "gpt-4o")
            llm.set_attribute("gen_ai.usage.input_tokens", 1000)
            llm.set_attribute("gen_ai.usage.output_tokens", 100)
        with tracer.start_as_current_span("execute_tool search") as tool:
            tool.set_attribute("gen_ai.operation.name", "execute_tool")
            tool.set_attribute("gen_ai.tool.name", "search")
    provider.shutdown()


def test_sdk_exporters_over_every_transport_are_stored(server: Server) -> None:
    auth = {"authorization": f"Bearer {INGEST}"}
    _send_agent_trace(
        GrpcSpanExporter(endpoint=server.grpc, insecure=True, headers=auth), "svc-grpc"
    )
    _send_agent_trace(
        GrpcSpanExporter(
            endpoint=server.grpc,
            insecure=True,
            headers=auth,
            compression=__import__("grpc").Compression.Gzip,
        ),
        "svc-grpc-gzip",
    )
    _send_agent_trace(
        HttpSpanExporter(endpoint=f"{server.base_url}/v1/traces", headers=auth), "svc-http"
    )
    _send_agent_trace(
        HttpSpanExporter(
            endpoint=f"{server.base_url}/v1/traces", headers=auth, compression=Compression.Gzip
        ),
        "svc-http-gzip",
    )
    assert server.stop() == 0
    rows = server.query(
        "SELECT service_name, org, span_type, count(*) FROM spans GROUP BY ALL ORDER BY ALL"
    )
    expected = []
    for svc in ("svc-grpc", "svc-grpc-gzip", "svc-http", "svc-http-gzip"):
        expected += [(svc, "acme", "agent", 1), (svc, "acme", "llm", 1), (svc, "acme", "tool", 1)]
    assert rows == expected
    llm = server.query(
        "SELECT model, input_tokens, output_tokens, cost_source, cost_usd > 0, "
        "attributes->>'gen_ai.request.model' FROM spans WHERE span_type = 'llm' LIMIT 1"
    )
    assert llm == [("gpt-4o", 1000, 100, "computed", True, "gpt-4o")]


def test_sdk_exporter_with_wrong_key_is_refused(server: Server) -> None:
    exporter = HttpSpanExporter(
        endpoint=f"{server.base_url}/v1/traces",
        headers={"authorization": f"Bearer {KEYS[('acme', 'read')]}"},
    )
    _send_agent_trace(exporter, "svc-refused")
    assert server.stop() == 0
    assert server.query("SELECT count(*) FROM spans") == [(0,)]
