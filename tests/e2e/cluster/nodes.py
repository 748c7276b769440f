"""Several `agentledger serve` nodes on one shared store (PostgreSQL catalog, S3 data), for the
cluster's end-to-end tests; and what the tests ask of them (their health, their runs).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.cluster import SharedStore
from tests.e2e.server import KEYS, Server, make_server
from tests.otlp_factory import agent_trace, export_request

T = TypeVar("T")
SECRET_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # 32 bytes: one for every node
LEASE_S = 2
INGEST = {"authorization": f"Bearer {KEYS[('acme', 'ingest')]}"}
READ = {"authorization": f"Bearer {KEYS[('acme', 'read')]}"}
ADMIN = {"authorization": f"Bearer {KEYS[('acme', 'admin')]}"}


def make_node(tmp: Path, shared: SharedStore, i: int, extra: str = "") -> Server:
    """Node `i` (not started): its own folder for what is per node, the shared store."""
    folder = tmp / f"node{i}"
    folder.mkdir(parents=True, exist_ok=True)
    cluster = (
        f'secrets: {{key: "{SECRET_KEY}"}}\ncluster: {{lease_s: {LEASE_S}, node_id: node{i}}}\n'
    )
    return make_server(folder, extra=cluster + extra, storage=shared.storage_yaml())


def until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def health(node: Server) -> dict[str, Any]:
    return dict(httpx.get(f"{node.base_url}/health", timeout=10).json())


def holder(nodes: list[Server], job: str) -> Server | None:
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None and job in health(node)["jobs"]:
            return node
    return None


def trace(seed: int) -> list[Span]:
    """An agent run of 8 spans, the root (workflow support-triage) last."""
    rng = random.Random(seed)
    while True:
        spans = agent_trace(8, rng, start_ns=time.time_ns() - 10**9)
        if "support-triage" in spans[-1].name:
            return spans


def expected(spans: list[Span]) -> tuple[int, int, int]:
    """(llm calls, tool calls, tokens) of the run these spans make."""
    llm = [s for s in spans if s.name.startswith("chat ")]
    tokens = 0
    for s in llm:
        attrs = {kv.key: kv.value.int_value for kv in s.attributes}
        tokens += attrs["gen_ai.usage.input_tokens"] + attrs["gen_ai.usage.output_tokens"]
    tools = len([s for s in spans if s.name.startswith("execute_tool")])
    return len(llm), tools, tokens


def post_spans(node: Server, spans: list[Span], timeout: float = 30) -> int:
    body = export_request(spans).SerializeToString()
    headers = {**INGEST, "content-type": "application/x-protobuf"}
    r = httpx.post(f"{node.base_url}/v1/traces", content=body, headers=headers, timeout=timeout)
    return r.status_code


def runs(node: Server) -> dict[str, tuple[str, int, int, int]]:
    """trace id (hex) → (status, llm calls, tool calls, tokens) of every run the node lists."""
    out: dict[str, tuple[str, int, int, int]] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100, "from": "2020-01-01T00:00:00Z"}
        if cursor:
            params["cursor"] = cursor
        r = httpx.get(f"{node.base_url}/api/runs", params=params, headers=READ, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        for run in body["runs"]:
            trace_id = run["id"][:32]  # a run's id is its trace id and root span id, in hex
            assert trace_id not in out, f"run of trace {trace_id} listed twice"
            out[trace_id] = (
                run["status"],
                run["llm_call_count"],
                run["tool_use_count"],
                run["total_tokens"],
            )
        cursor = body["next_cursor"]
        if not cursor:
            return out
