"""A seeded random fuzz of the real server's OTLP receivers, over HTTP and gRPC.

Bodies: truncated and bit-flipped protobuf, random bytes, extreme numbers in valid messages,
OTLP/JSON with lone surrogates, non-finite and huge numbers, invalid UTF-8, deep nesting, and bad
encodings (truncated and bogus gzip, a gzip bomb, unknown encodings). No answer is a 5xx, and no
payload is answered 503 / UNAVAILABLE again and again (that is, one that will never succeed);
the server stays healthy, still accepts data, and its memory (server + workers) stays bounded.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from tests.e2e.otlp import JSON, PROTOBUF, logs_request, metrics_request, otlp_json, spans_request
from tests.e2e.server import KEYS, Server, make_server
from tests.otlp_factory import kv, request_of

SEED = 20
INGEST = KEYS[("acme", "ingest")]
SIGNALS = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = make_server(tmp_path_factory.mktemp("fuzz"), workers=2).start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.stop()


def tree_rss_mib(pid: int) -> float:
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            pids += [int(x) for x in f.read().split()]
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def _valid(rng: random.Random) -> tuple[str, bytes]:
    seed = rng.randrange(10**6)
    signal = rng.choice(list(SIGNALS))
    if signal == "logs":
        return signal, logs_request(f"fuzz-{seed}", rng.randint(1, 20)).SerializeToString()
    if signal == "metrics":
        return signal, metrics_request(f"fuzz-{seed}", seed).SerializeToString()
    if rng.random() < 0.5:
        return signal, request_of(rng.randint(1, 64), seed=seed).SerializeToString()
    return signal, spans_request(f"fuzz-{seed}", rng.randint(1, 20), seed=seed).SerializeToString()


def _extreme(rng: random.Random) -> tuple[str, bytes]:
    """Valid protobuf with the numbers at the edges of their types."""
    seed = rng.randrange(10**6)
    req = spans_request(f"extreme-{seed}", 5, seed=seed)
    edges = [0, 1, 2**31, 2**32 - 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]
    doubles = [math.inf, -math.inf, math.nan, -0.0, 1e308, 5e-324]
    for span in req.resource_spans[0].scope_spans[0].spans:
        span.start_time_unix_nano = rng.choice(edges)
        span.end_time_unix_nano = rng.choice(edges)
        span.kind = rng.choice([0, 5, 2**31 - 1, -(2**31)])
        span.dropped_attributes_count = rng.choice([0, 2**32 - 1])
        span.attributes.extend(
            [
                kv("gen_ai.usage.input_tokens", rng.choice([2**63 - 1, -(2**63), 0])),
                kv("gen_ai.usage.output_tokens", rng.choice(doubles)),
                kv("gen_ai.usage.cost", rng.choice(doubles)),
                kv("gen_ai.request.model", "gpt-4o"),
                kv("x", rng.choice(doubles)),
            ]
        )
        span.events.add(name="e", time_unix_nano=rng.choice(edges))
    return "traces", req.SerializeToString()


def _mutated_protobuf(rng: random.Random) -> tuple[str, bytes]:
    signal, body = _valid(rng)
    data = bytearray(body)
    how = rng.randrange(3)
    if how == 0 and data:
        data = data[: rng.randrange(len(data))]
    elif how == 1:
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    else:
        data = bytearray(rng.randbytes(rng.randint(1, 4096)))
    return signal, bytes(data)


_JSON_POISON = [
    '"\\ud800"',
    '"\\udfff\\ud800"',
    "Infinity",
    "-Infinity",
    "NaN",
    "1e400",
    "1" + "0" * 400,
    "-1",
    "18446744073709551616",
    "[" * 5000 + "]" * 5000,
    "{}",
    "null",
]


def _json(rng: random.Random) -> tuple[str, bytes, str]:
    signal = rng.choice(list(SIGNALS))
    message = {
        "traces": spans_request,
        "logs": logs_request,
        "metrics": metrics_request,
    }[signal]("json-fuzz")
    text = otlp_json(message).decode()
    how = rng.randrange(4)
    if how == 0:  # a value replaced by poison
        spots = [i for i, c in enumerate(text) if c == ":"]
        i = rng.choice(spots) + 1
        end = i
        while end < len(text) and text[end] not in ",}]":
            end += 1
        text = text[:i] + rng.choice(_JSON_POISON) + text[end:]
        return signal, text.encode(), JSON
    if how == 1:  # cut short
        return signal, text[: rng.randrange(len(text))].encode(), JSON
    if how == 2:  # invalid UTF-8 inside a string
        raw = text.encode()
        i = raw.index(b'"', rng.randrange(len(raw) // 2))
        return signal, raw[: i + 1] + b"\xff\xfe\xc3" + raw[i + 1 :], JSON
    return signal, json.dumps(rng.choice([[], "x", 5, {"resourceSpans": 7}])).encode(), JSON


def _cases(rng: random.Random, n: int) -> Iterator[tuple[str, bytes, str, dict[str, str]]]:
    bomb = gzip.compress(b"\0" * (96 * MIB), compresslevel=9)  # inflates past the 64 MiB limit
    for i in range(n):
        kind = i % 8
        headers: dict[str, str] = {}
        media = PROTOBUF
        if kind in (0, 1, 2):
            signal, body = _mutated_protobuf(rng)
        elif kind == 3:
            signal, body = _extreme(rng)
        elif kind in (4, 5):
            signal, body, media = _json(rng)
        elif kind == 6:  # encodings
            signal, body = _valid(rng)
            how = rng.randrange(5)
            if how == 0:
                body, headers = gzip.compress(body), {"content-encoding": "gzip"}
            elif how == 1:
                body, headers = (
                    gzip.compress(body)[: -rng.randint(1, 8)],
                    {"content-encoding": "gzip"},
                )
            elif how == 2:
                headers = {"content-encoding": rng.choice(["gzip", "deflate", "br", "zstd"])}
            elif how == 3:
                body, headers = bomb, {"content-encoding": "gzip"}
            else:
                media = rng.choice(["text/plain", "application/json; charset=latin-1", ""])
        else:
            signal, body = _valid(rng)
        yield signal, body, media, headers


def _post_until_settled(
    client: httpx.Client, signal: str, body: bytes, media: str, headers: dict[str, str]
) -> int:
    """The status, retrying a 503 as an exporter would: a 503 that never goes away fails."""
    for _ in range(4):
        r = client.post(
            f"/v1/{signal}",
            content=body,
            headers={"authorization": f"Bearer {INGEST}", "content-type": media, **headers},
        )
        if r.status_code != 503:
            return r.status_code
        time.sleep(float(r.headers.get("retry-after", "1")))
    return 503


def _export_until_settled(channel: grpc.Channel, signal: str, body: bytes) -> grpc.StatusCode:
    call = channel.unary_unary(f"/{SIGNALS[signal]}/Export")
    code = grpc.StatusCode.OK
    for _ in range(4):
        try:
            call(body, metadata=(("authorization", f"Bearer {INGEST}"),), timeout=60)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        if code != grpc.StatusCode.UNAVAILABLE:
            return code
        time.sleep(1.0)
    return code


def test_fuzzed_otlp_gets_no_5xx_and_no_endless_unavailable(server: Server) -> None:
    assert server.proc is not None
    rng = random.Random(SEED)
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        for signal, body in (_valid(rng) for _ in range(6)):  # warm up both workers
            assert _post_until_settled(client, signal, body, PROTOBUF, {}) == 200
        before = tree_rss_mib(server.proc.pid)
        seen: dict[int, int] = {}
        for signal, body, media, headers in _cases(rng, 240):
            status = _post_until_settled(client, signal, body, media, headers)
            seen[status] = seen.get(status, 0) + 1
            assert status < 500, (status, signal, media, headers, body[:200])
        codes: dict[str, int] = {}
        with grpc.insecure_channel(
            server.grpc, options=[("grpc.max_send_message_length", 128 * MIB)]
        ) as channel:
            for signal, body, media, _ in _cases(rng, 160):
                if media != PROTOBUF:
                    continue
                code = _export_until_settled(channel, signal, body)
                codes[code.name] = codes.get(code.name, 0) + 1
                assert code in (
                    grpc.StatusCode.OK,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                ), (code, signal, body[:200])
        after = tree_rss_mib(server.proc.pid)
        assert client.get("/health").json() == {"status": "ok"}
        assert _post_until_settled(client, *_valid(rng), PROTOBUF, {}) == 200
    assert seen.get(200) and seen.get(400) and seen.get(413), seen
    assert codes.get("OK") and codes.get("INVALID_ARGUMENT"), codes
    assert after - before < 400, (before, after)
