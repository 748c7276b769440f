"""Decode cost per span, A/B: the attribute JSON written by orjson (as shipped) against the
stdlib encoder it replaced, in decode and in the `redact:` processor.

Realistic traces of tests/otlp_factory.py (~15 attributes a span, 512 a request). Reports process
CPU µs a span (robust to a busy machine), the best of several rounds, the two encoders
interleaved round by round so a change in machine load hits both alike.

    python bench/decode.py --requests 20 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import collector.decode  # noqa: E402
import processors.redact.processor  # noqa: E402
from collector.decode import decode  # noqa: E402
from collector.model import Signal  # noqa: E402
from processors.redact.processor import RedactConfig, RedactProcessor  # noqa: E402
from tests.otlp_factory import kv, request_of  # noqa: E402

SPANS = 512
_STDLIB = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_SHIPPED = collector.decode._dumps


def use(encoder: Callable[[Any], str]) -> None:
    collector.decode._dumps = encoder  # type: ignore[assignment]
    processors.redact.processor._dumps = encoder  # type: ignore[assignment]


def payload(seed: int) -> bytes:
    req = request_of(SPANS, seed=seed)
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    for span in spans[::10]:  # one span in ten redacted: its attributes are written again
        span.attributes.append(kv("user.email", f"user{seed}@example.com"))
    return req.SerializeToString()


def cpu_us_per_span(data: list[bytes], redact: RedactProcessor | None) -> float:
    start = time.process_time()
    for p in data:
        batch = decode(Signal.TRACES, "b", p, "protobuf")
        if redact is not None:
            redact.process(batch)
    return (time.process_time() - start) / (len(data) * SPANS) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    data = [payload(i) for i in range(args.requests)]
    redact = RedactProcessor(RedactConfig(detectors=["email"], blocked_keys=["*password*"]))
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for name, encoder in (("stdlib json", _STDLIB), ("orjson", _SHIPPED)):
            use(encoder)
            for step, r in (("decode", None), ("decode + redact", redact)):
                us = cpu_us_per_span(data, r)
                best[(name, step)] = min(best.get((name, step), us), us)
    use(_SHIPPED)
    for step in ("decode", "decode + redact"):
        a, b = best[("stdlib json", step)], best[("orjson", step)]
        print(
            f"{step:<16} stdlib json {a:5.1f} µs/span   orjson {b:5.1f} µs/span   "
            f"({(b - a) / a:+.0%})"
        )


if __name__ == "__main__":
    main()
