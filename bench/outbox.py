"""Outbox benchmark: what the one durable outbox costs per message and when idle.

In a temporary store: queues messages in transactions of 100 and times their delivery through
(a) a topic that accepts at once (the outbox's own cost: read, record, per pass) and (b) the
evals callback topic posting signed JSON to a local HTTP receiver; then runs the delivery loop
with nothing to do and reports the CPU it used.

    python bench/outbox.py --messages 2000 --idle-seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from collector.evals.callbacks import Callbacks  # noqa: E402
from collector.evals.config import EvalsConfig  # noqa: E402
from collector.outbound.config import OutboundPolicy  # noqa: E402
from collector.outbound.outbox import Message, Outbox, Retry, queue  # noqa: E402
from collector.store.lake import StoreSettings  # noqa: E402
from collector.store.writer import Store  # noqa: E402
from tests.fixtures.receiver import Receiver  # noqa: E402


class Accept:
    name = "accept"
    retry = Retry(3, 1.0, 10.0)

    def __init__(self) -> None:
        self.sent = 0

    async def deliver(self, message: Message) -> None:
        self.sent += 1

    def finished(self, cur: duckdb.DuckDBPyConnection, messages: Sequence[Message]) -> None:
        return None


def fill(store: Store, topic: str, n: int, target: dict[str, Any]) -> float:
    """Queue `n` messages, 100 a transaction; seconds taken."""
    started = time.perf_counter()
    for first in range(0, n, 100):

        def write(cur: duckdb.DuckDBPyConnection, first: int = first) -> None:
            now = datetime.now(UTC)
            for i in range(first, min(n, first + 100)):
                payload = {"event": "log.evaluated", "id": f"l{i}", "status": "flagged"}
                queue(cur, topic, org="acme", reference=f"l{i}", kind="log.evaluated",
                      target=target, payload=payload, now=now)  # fmt: skip

        store.call(write)
    return time.perf_counter() - started


def timed_drain(box: Outbox) -> float:
    started = time.perf_counter()
    asyncio.run(box.drain())
    return time.perf_counter() - started


async def idle(box: Outbox, seconds: float) -> tuple[float, int]:
    """CPU seconds the process used while the loop ran `seconds` with nothing due."""
    await box.start()
    await asyncio.sleep(1.0)  # past the first pass and pruning
    passes, cpu = box.passes, time.process_time()
    await asyncio.sleep(seconds)
    used = time.process_time() - cpu
    passes = box.passes - passes
    await box.stop()
    return used, passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()
    n = args.messages
    with tempfile.TemporaryDirectory() as folder, Receiver() as hook:
        settings = StoreSettings(catalog=f"{folder}/c.ducklake", data_path=f"{folder}/d")
        store = Store(settings)
        store.open()
        try:
            box = Outbox(store)
            box.create_tables()
            accept = Accept()
            box.register(accept)

            async def secrets(org: str) -> tuple[dict[str, Any], dict[str, str]]:
                return {}, {"callbackSecret": "whsec_bench"}

            policy = OutboundPolicy(allow_private=True)
            box.register(Callbacks(policy, secrets, None, EvalsConfig()))

            queued = fill(store, "accept", n, {"to": "memory"})
            drained = timed_drain(box)
            print(f"in-process topic: queued {n} in {queued:.2f} s ({n / queued:,.0f}/s); "
                  f"delivered in {drained:.2f} s ({n / drained:,.0f}/s)")  # fmt: skip
            target = {"channel": "callback", "url": hook.url("/cb")}
            queued = fill(store, "evals", n, target)
            drained = timed_drain(box)
            assert len(hook.requests) == n, len(hook.requests)
            print(f"signed callbacks to a local receiver: delivered {n} in {drained:.2f} s "
                  f"({n / drained:,.0f}/s)")  # fmt: skip
            cpu, passes = asyncio.run(idle(box, args.idle_seconds))
            print(f"idle loop: {passes} passes in {args.idle_seconds:g} s, "
                  f"{cpu / args.idle_seconds * 100:.2f}% of a core")  # fmt: skip
        finally:
            store.close()


if __name__ == "__main__":
    main()
