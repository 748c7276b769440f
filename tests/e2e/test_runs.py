"""Runs derived from committed spans in the running server: out of order, split across requests
and across a restart, re-sent, and looping."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.e2e.server import KEYS, Server, make_server
from tests.otlp_factory import agent_trace, export_request, kv

HEADERS = {
    "content-type": "application/x-protobuf",
    "authorization": f"Bearer {KEYS[('acme', 'ingest')]}",
}


def _post(server: Server, spans: list[Span]) -> None:
    body = export_request(spans).SerializeToString()
    r = httpx.post(f"{server.base_url}/v1/traces", content=body, headers=HEADERS, timeout=30)
    assert r.status_code == 200, r.text


def _runs(server: Server) -> list[tuple[object, ...]]:
    return server.query(
        "SELECT workflow_name, status, llm_call_count, tool_use_count, input_tokens, "
        "output_tokens, round(cost_usd, 9) FROM runs ORDER BY run_id"
    )


def _expected(spans: list[Span]) -> tuple[object, ...]:
    llm = [s for s in spans if s.name.startswith("chat ")]
    attrs = [{kv.key: kv.value for kv in s.attributes} for s in llm]
    return (
        "support-triage",
        "success",
        len(llm),
        len([s for s in spans if s.name.startswith("execute_tool")]),
        sum(a["gen_ai.usage.input_tokens"].int_value for a in attrs),
        sum(a["gen_ai.usage.output_tokens"].int_value for a in attrs),
    )


def _trace(seed: int) -> list[Span]:
    import random

    rng = random.Random(seed)
    while True:
        spans = agent_trace(8, rng, start_ns=time.time_ns() - 10**9)
        if "support-triage" in spans[-1].name:
            return spans  # root last


def test_run_from_children_first_root_later_across_a_restart(tmp_path: Path) -> None:
    spans = _trace(1)
    children, root = spans[:-1], spans[-1]
    server = make_server(tmp_path).start()
    _post(server, children[:3])
    _post(server, children[3:])
    # (SIGTERM runs a last derivation step, so what was committed is derived before exit.)
    assert server.stop() == 0
    assert [r[1] for r in _runs(server)] == ["running"]

    server = Server(server.data_dir, server.config_path).start()
    _post(server, [root])
    _post(server, spans)  # an exporter retry of everything: must not double anything
    assert server.stop() == 0
    rows = _runs(server)
    assert len(rows) == 1
    assert rows[0][:6] == _expected(spans)
    costs = server.query(
        "SELECT round(sum(cost_usd), 9) FROM spans WHERE span_type = 'llm' AND org = 'acme'"
    )
    assert rows[0][6] == costs[0][0]


def test_the_same_tool_call_five_times_is_a_loop(tmp_path: Path) -> None:
    trace_id, root_id = b"\x07" * 16, b"\x01" * 8
    now = time.time_ns() - 10**9
    tools = [
        Span(
            trace_id=trace_id,
            span_id=(10 + i).to_bytes(8, "big"),
            parent_span_id=root_id,
            name="execute_tool search",
            start_time_unix_nano=now + i,
            end_time_unix_nano=now + i + 1,
            attributes=[
                kv("gen_ai.operation.name", "execute_tool"),
                kv("gen_ai.tool.name", "search"),
                kv("gen_ai.tool.call.arguments", json.dumps({"q": "same"})),
            ],
        )
        for i in range(5)
    ]
    root = Span(
        trace_id=trace_id,
        span_id=root_id,
        name="invoke_agent looper",
        start_time_unix_nano=now,
        end_time_unix_nano=now + 100,
        attributes=[kv("gen_ai.operation.name", "invoke_agent"), kv("gen_ai.agent.name", "looper")],
    )
    server = make_server(tmp_path).start()
    _post(server, [*tools, root])
    assert server.stop() == 0
    assert server.query("SELECT workflow_name, status, tool_use_count FROM runs") == [
        ("looper", "loop_detected", 5)
    ]


def test_llm_and_tool_calls_carry_their_run_and_genai_log_events(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    spans = _trace(2)
    llm = next(s for s in spans if s.name.startswith("chat "))
    logs = ExportLogsServiceRequest()
    record = logs.resource_logs.add().scope_logs.add().log_records.add()
    record.trace_id, record.span_id = llm.trace_id, llm.span_id
    record.event_name = "gen_ai.user.message"
    record.body.CopyFrom(AnyValue(string_value="Where is my invoice?"))
    server = make_server(tmp_path).start()
    _post(server, spans)
    r = httpx.post(
        f"{server.base_url}/v1/logs",
        content=logs.SerializeToString(),
        headers=HEADERS,
        timeout=30,
    )
    assert r.status_code == 200
    assert server.stop() == 0
    run_id = server.query("SELECT run_id FROM runs")[0][0]
    calls = server.query("SELECT run_id, span_id, event_content FROM llm_calls ORDER BY span_id")
    assert {c[0] for c in calls} == {run_id}
    assert [c[2] for c in calls if c[1] == llm.span_id.hex()] == [
        'gen_ai.user.message: "Where is my invoice?"'
    ]
    tools = server.query("SELECT DISTINCT run_id, success FROM tool_calls")
    assert tools == [(run_id, True)]
    assert server.query("SELECT count(*) FROM cost_records") == [(len(calls),)]
