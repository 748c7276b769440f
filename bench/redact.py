"""Redaction cost per span: CPU time of decode, normalise and `redact:` on the ingest payloads.

Uses the realistic traces of tests/otlp_factory.py (~15 attributes a span, 512 a request), clean
and with a secret in every tenth span, and reports process CPU µs a span (robust to a busy
machine, unlike wall-clock throughput). `bench/ingest.py --redact` measures it end to end.

    python bench/redact.py --requests 20
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.decode import decode  # noqa: E402
from collector.model import Batch, Signal  # noqa: E402
from processors.normalise.span import NormaliseConfig, NormaliseProcessor  # noqa: E402
from processors.redact.processor import RedactConfig, RedactProcessor  # noqa: E402
from tests.otlp_factory import kv, request_of  # noqa: E402

SPANS = 512


def payload(seed: int, secrets: bool) -> bytes:
    req = request_of(SPANS, seed=seed)
    if secrets:
        spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        for span in spans[::10]:
            span.attributes.append(kv("user.email", f"user{seed}@example.com"))
    return req.SerializeToString()


def cpu_us_per_span(step: Callable[[], object], batches: int) -> float:
    start = time.process_time()
    step()
    return (time.process_time() - start) / (batches * SPANS) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20)
    args = ap.parse_args()
    n = args.requests
    redact = RedactProcessor(RedactConfig(blocked_keys=["*password*"]))
    normalise = NormaliseProcessor(NormaliseConfig())
    for secrets in (False, True):
        report(secrets, [payload(i, secrets) for i in range(n)], redact, normalise)


def report(
    secrets: bool, data: list[bytes], redact: RedactProcessor, normalise: NormaliseProcessor
) -> None:
    n = len(data)
    batches: list[Batch] = []
    decode_us = cpu_us_per_span(
        lambda: batches.extend(decode(Signal.TRACES, "b", p, "protobuf") for p in data), n
    )
    redact_us = cpu_us_per_span(lambda: [redact.process(b) for b in batches], n)
    normalise_us = cpu_us_per_span(lambda: [normalise.process(b) for b in batches], n)
    print(
        f"{'10% of spans with a secret' if secrets else 'clean spans':<28} "
        f"decode {decode_us:5.1f} µs/span   normalise {normalise_us:5.1f}   "
        f"redact {redact_us:5.1f} ({redact_us / (decode_us + normalise_us):.0%} of the two)"
    )


if __name__ == "__main__":
    main()
