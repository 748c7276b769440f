"""Pricing cost per span: CPU time of the `cost` processor on the ingest payloads, and per LLM call.

Decodes and normalises the realistic traces of tests/otlp_factory.py (512 spans a request), then
times the cost processor over them with the full price stack (the shipped corrections over
genai-prices); and over a batch of LLM calls only, of several models (genai-prices', the shipped
book's and an unknown one). Reports process CPU µs (robust to a busy machine).

    python bench/cost.py --requests 20
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
from collector.prices.layers import stack  # noqa: E402
from processors.cost import CostConfig, CostProcessor  # noqa: E402
from processors.normalise.span import NormaliseConfig, NormaliseProcessor  # noqa: E402
from tests.otlp_factory import request_of  # noqa: E402

SPANS = 512
MODELS = (
    "gpt-4o-mini",
    "claude-sonnet-4-20250514",
    "gemini-2.5-flash",
    "gpt-4.1",
    "deepseek-chat",  # the shipped corrections' (dated)
    "no-such-model",
)


def cpu_us(step: Callable[[], object], items: int) -> float:
    start = time.process_time()
    step()
    return (time.process_time() - start) / items * 1e6


def llm_calls(n: int) -> Batch:
    """`n` LLM spans as normalise leaves them, a day apart, cycling through MODELS."""
    columns: dict[str, list[object]] = {
        "span_type": ["llm"] * n,
        "model": [MODELS[i % len(MODELS)] for i in range(n)],
        "request_model": [None] * n,
        "provider": [None] * n,
        "usage_is_aggregate": [False] * n,
        "input_tokens": [1000 + i % 500 for i in range(n)],
        "output_tokens": [100 + i % 50 for i in range(n)],
        "cache_read_tokens": [i % 100 for i in range(n)],
        "cache_write_tokens": [0] * n,
        "reasoning_tokens": [0] * n,
        "start_time_unix_nano": [1_750_000_000_000_000_000 + i * 86_400 * 10**9 for i in range(n)],
    }
    return Batch(
        Signal.TRACES, "bench", columns, [{} for _ in range(n)], [{} for _ in range(n)],
        [[] for _ in range(n)],
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--calls", type=int, default=20_000)
    args = ap.parse_args()
    cost = CostProcessor(CostConfig(), stack(None))
    normalise = NormaliseProcessor(NormaliseConfig())
    data = [request_of(SPANS, seed=i).SerializeToString() for i in range(args.requests)]
    batches = [normalise.process(decode(Signal.TRACES, "bench", p, "protobuf")) for p in data]
    llm = sum(t == "llm" for b in batches for t in b.columns["span_type"])
    spans = len(batches) * SPANS
    cost.process(llm_calls(100))  # the first lookups of each model are memoised after
    traces_us = cpu_us(lambda: [cost.process(b) for b in batches], spans)
    print(f"ingest payloads: cost {traces_us:5.1f} µs/span ({llm / spans:.0%} of spans are LLM)")
    calls = llm_calls(args.calls)
    calls_us = cpu_us(lambda: cost.process(calls), args.calls)
    print(f"LLM calls only:  cost {calls_us:5.1f} µs/call ({len(MODELS)} models)")


if __name__ == "__main__":
    main()
