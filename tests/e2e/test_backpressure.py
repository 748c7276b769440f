"""Backpressure end to end: tiny queue bounds, concurrent clients, retryable refusals.

Over `limits.max_queue_items` or `max_queue_mib` the server answers HTTP 503 + Retry-After and
gRPC UNAVAILABLE + RetryInfo; it keeps running, still accepts data afterwards, and every
acknowledged span is in the store while no refused one is. A request that could never fit the
memory bound, even alone, is refused for good (413 / RESOURCE_EXHAUSTED without RetryInfo).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.e2e.otlp import PROTOBUF, spans_request
from tests.e2e.server import KEYS, Server, make_server
from tests.promtext import metric

AUTH = {"authorization": f"Bearer {KEYS[('acme', 'ingest')]}", "content-type": PROTOBUF}
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture(scope="module")
def items_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """At most one decoded item waiting for a commit, and commits that take their time."""
    s = make_server(
        tmp_path_factory.mktemp("bp-items"),
        limits="max_queue_items: 1, retry_after_s: 2",
        storage="commit_interval_ms: 150",
    ).start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.stop()


@pytest.fixture(scope="module")
def ledger() -> dict[str, set[str]]:
    """Services whose requests `items_server` acknowledged, and those it refused."""
    return {"acked": set(), "refused": set()}


async def _post_all(
    base_url: str, bodies: list[bytes], clients: int | None = None
) -> list[httpx.Response]:
    """POST every body, from `clients` concurrent senders (default: all at once); each sender
    sends its next body as soon as the previous one is answered, like an SDK exporter."""
    todo = list(enumerate(bodies))
    answers: dict[int, httpx.Response] = {}

    async def sender(client: httpx.AsyncClient) -> None:
        while todo:
            i, body = todo.pop(0)
            answers[i] = await client.post("/v1/traces", content=body, headers=AUTH)

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        await asyncio.gather(*(sender(client) for _ in range(clients or len(bodies))))
    return [answers[i] for i in range(len(bodies))]


def _send_until_accepted(base_url: str, body: bytes) -> None:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for _ in range(50):
            r = client.post("/v1/traces", content=body, headers=AUTH)
            if r.status_code == 200:
                return
            assert r.status_code == 503
        raise AssertionError("never accepted")


def test_http_over_the_item_bound_is_503_with_retry_after(
    items_server: Server, ledger: dict[str, set[str]]
) -> None:
    s = items_server
    # A burst that arrives at once is admitted whole (items count once decoded), so send the
    # way exporters do: eight senders, each sending again as soon as it is answered.
    bodies = [spans_request(f"http-{i}", 50, seed=i).SerializeToString() for i in range(32)]
    responses = asyncio.run(_post_all(s.base_url, bodies, clients=8))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(503) >= 1 and codes.count(200) >= 1, codes
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "2"
            status = status_pb2.Status.FromString(r.content)
            assert status.code == 14  # UNAVAILABLE
            assert "queue is full" in status.message
        else:
            assert ExportTraceServiceResponse.FromString(r.content) == (
                ExportTraceServiceResponse()
            )
    assert s.proc is not None and s.proc.poll() is None
    with httpx.Client(base_url=s.base_url, timeout=30) as client:
        assert client.get("/health").json() == {"status": "ok"}
        page = client.get("/metrics").text
    assert metric(page, "agentledger_requests_refused_total", reason="queue_items") >= codes.count(
        503
    )
    # Once the burst is over, data is accepted again.
    _send_until_accepted(s.base_url, spans_request("after-http", 5, seed=100).SerializeToString())
    ledger["acked"] |= {f"http-{i}" for i, code in enumerate(codes) if code == 200}
    ledger["acked"].add("after-http")
    ledger["refused"] |= {f"http-{i}" for i, code in enumerate(codes) if code == 503}


def test_grpc_over_the_item_bound_is_unavailable_with_retry_info(
    items_server: Server, ledger: dict[str, set[str]]
) -> None:
    s = items_server
    with grpc.insecure_channel(s.grpc) as channel:
        export = channel.unary_unary(
            EXPORT,
            request_serializer=lambda b: b,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        metadata = [("authorization", AUTH["authorization"])]
        bodies = [
            spans_request(f"grpc-{i}", 50, seed=200 + i).SerializeToString() for i in range(32)
        ]

        def call(body: bytes) -> grpc.RpcError | None:
            try:
                export(body, metadata=metadata, timeout=60)
            except grpc.RpcError as e:
                return e
            return None

        with ThreadPoolExecutor(max_workers=8) as senders:  # eight exporters, as over HTTP
            errors = list(senders.map(call, bodies))
        outcomes: list[grpc.StatusCode] = []
        for err in errors:
            if err is None:
                outcomes.append(grpc.StatusCode.OK)
                continue
            assert isinstance(err, grpc.RpcError)
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            outcomes.append(err.code())
            details = dict(err.trailing_metadata() or ())["grpc-status-details-bin"]
            status = status_pb2.Status.FromString(details)
            assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
            [packed] = status.details
            info = error_details_pb2.RetryInfo()
            assert packed.Unpack(info)
            assert info.retry_delay.seconds == 2
        assert grpc.StatusCode.UNAVAILABLE in outcomes and grpc.StatusCode.OK in outcomes
        # Afterwards the server accepts again.
        for _ in range(50):
            try:
                export(
                    spans_request("after-grpc", 5, seed=300).SerializeToString(), metadata=metadata
                )
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
        else:
            raise AssertionError("never accepted")
    ledger["acked"] |= {f"grpc-{i}" for i, c in enumerate(outcomes) if c == grpc.StatusCode.OK}
    ledger["acked"].add("after-grpc")
    ledger["refused"] |= {f"grpc-{i}" for i, c in enumerate(outcomes) if c != grpc.StatusCode.OK}


def test_every_acknowledged_span_is_stored_and_no_refused_one(
    items_server: Server, ledger: dict[str, set[str]]
) -> None:
    s = items_server
    acked, refused = ledger["acked"], ledger["refused"]
    if not acked:
        pytest.skip("run with the tests above")
    assert s.stop() == 0
    stored = dict(s.query("SELECT service_name, count(*) FROM spans GROUP BY ALL"))
    expected = {svc: 5 if svc.startswith("after") else 50 for svc in acked}
    assert {svc: stored.get(svc) for svc in acked} == expected
    assert not refused & set(stored)


def test_http_over_the_byte_bound_is_503(tmp_path: Path) -> None:
    s = make_server(tmp_path, limits="max_queue_mib: 3", storage="commit_interval_ms: 150").start()
    try:
        # About 0.4 MiB a request, which holds ~1.2 MiB while decoded and ~2 MiB with its rows:
        # one alone fits the 3 MiB bound, two at once do not.
        bodies = [
            spans_request(f"bytes-{i}", 4_000, seed=400 + i).SerializeToString() for i in range(8)
        ]
        assert 300_000 < len(bodies[0]) < 600_000
        responses = asyncio.run(_post_all(s.base_url, bodies))
        codes = [r.status_code for r in responses]
        assert set(codes) == {200, 503}, codes
        assert all(r.headers["retry-after"] == "1" for r in responses if r.status_code == 503)
        with httpx.Client(base_url=s.base_url, timeout=30) as client:
            page = client.get("/metrics").text
        assert metric(page, "agentledger_requests_refused_total", reason="queue_bytes") >= 1
        _send_until_accepted(s.base_url, bodies[0])
        assert s.stop() == 0
        stored = dict(s.query("SELECT service_name, count(*) FROM spans GROUP BY ALL"))
        for i, code in enumerate(codes):
            assert stored.get(f"bytes-{i}") == (4_000 if code == 200 or i == 0 else None), i
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.stop()


def test_a_request_that_can_never_fit_the_memory_bound_is_refused_for_good(tmp_path: Path) -> None:
    s = make_server(tmp_path, limits="max_queue_mib: 1").start()
    try:
        body = spans_request("huge", 4_000, seed=500).SerializeToString()  # ~0.4 MiB, x3 > 1 MiB
        with httpx.Client(base_url=s.base_url, timeout=60) as client:
            r = client.post("/v1/traces", content=body, headers=AUTH)
            assert r.status_code == 413 and "retry-after" not in r.headers
            assert "max_queue_mib" in status_pb2.Status.FromString(r.content).message
            ok = client.post(
                "/v1/traces", content=spans_request("small", 5).SerializeToString(), headers=AUTH
            )
            assert ok.status_code == 200
            page = client.get("/metrics").text
        assert metric(page, "agentledger_requests_refused_total", reason="too_large") == 1
        with grpc.insecure_channel(s.grpc) as channel:
            export = channel.unary_unary(EXPORT, request_serializer=lambda b: b)
            try:
                export(body, metadata=[("authorization", AUTH["authorization"])], timeout=60)
                raise AssertionError("accepted")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "grpc-status-details-bin" not in dict(e.trailing_metadata() or ())
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.stop()


def test_a_request_that_would_wait_too_long_is_503(tmp_path: Path) -> None:
    """Admission by the time a request would wait (backlog / measured rate), whatever the
    bounds on memory and items: 40 exporters at once, a 0.2 s bound."""
    s = make_server(tmp_path, limits="max_wait_s: 0.2").start()
    try:
        bodies = [
            spans_request(f"wait-{i}", 1_000, seed=600 + i).SerializeToString() for i in range(120)
        ]
        responses = asyncio.run(_post_all(s.base_url, bodies, clients=40))
        codes = [r.status_code for r in responses]
        assert set(codes) == {200, 503}, codes
        refused = [r for r in responses if r.status_code == 503]
        assert all(r.headers["retry-after"] == "1" for r in refused)
        assert any("would wait" in status_pb2.Status.FromString(r.content).message for r in refused)
        with httpx.Client(base_url=s.base_url, timeout=30) as client:
            page = client.get("/metrics").text
        assert metric(page, "agentledger_requests_refused_total", reason="wait") >= 1
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.stop()
