"""Admission control for ingest: what a request may hold (memory, items) and how long it would
wait, against the `limits:` section; beyond a bound the answer is retryable (503 / UNAVAILABLE)
or, for a request no bound can ever admit, permanent (413 / RESOURCE_EXHAUSTED).

`collector/pipeline.py` takes a `Hold` per request and grows it as the request is decoded; the
figures go to /metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from collector.model import Overloaded, TooLarge
from collector.telemetry import Metrics

# Memory a request takes while it waits for and is in a decode worker, per payload byte, by
# encoding: the payload and its chunks in this process, and its copy in a worker (protobuf is
# parsed a chunk at a time: collector/chunks.py). OTLP/JSON is parsed whole into Python objects,
# measured at ~10x its size.
DECODE_FACTOR = {"protobuf": 3, "json": 12}


# Refusing by the expected wait needs a queue: with a few requests in flight their time is their
# own decode and commit, which a refusal does not shorten (and a slow first second after a start
# would otherwise turn a handful of exporters away).
MIN_QUEUE = 16


@dataclass(frozen=True)
class Limits:
    max_queue_items: int = 200_000
    max_queue_bytes: int = 128 * 1024 * 1024
    retry_after_s: float = 1.0
    max_wait_s: float = 3.0


class Throughput:
    """Payload bytes answered per second while any request is in flight, smoothed over windows
    of at least a second: the rate at which this node works off its backlog."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self._bytes = 0
        self._busy = 0.0
        self._since: float | None = None

    def busy(self, now: float) -> None:
        if self._since is None:
            self._since = now

    def idle(self, now: float) -> None:
        if self._since is not None:
            self._busy += now - self._since
            self._since = None

    def done(self, nbytes: int, now: float) -> None:
        self._bytes += nbytes
        busy = self._busy + (now - self._since if self._since is not None else 0.0)
        if busy < 1.0:
            return
        window = self._bytes / busy
        self.rate = window if self.rate is None else 0.7 * self.rate + 0.3 * window
        self._bytes, self._busy = 0, 0.0
        if self._since is not None:
            self._since = now


class Admission:
    """The bounds shared by every request of the node (one event loop: no locks needed)."""

    def __init__(self, limits: Limits, metrics: Metrics) -> None:
        self.limits = limits
        self._metrics = metrics
        self.held_bytes = 0
        self.queued_items = 0
        self.backlog_bytes = 0  # payload bytes admitted and not answered yet
        self.inflight = 0
        self.throughput = Throughput()
        metrics.gauge(
            "agentledger_queue_items",
            "items decoded and waiting for commit",
            lambda: float(self.queued_items),
        )
        metrics.gauge(
            "agentledger_queue_bytes",
            "memory held by admitted requests: payloads, then decoded rows (estimated before)",
            lambda: float(self.held_bytes),
        )
        metrics.gauge(
            "agentledger_queue_wait_seconds",
            "how long a request arriving now would wait, estimated from the measured rate",
            lambda: self.expected_wait(0) or 0.0,
        )

    def expected_wait(self, size: int) -> float | None:
        rate = self.throughput.rate
        if rate is None or rate <= 0:
            return None
        return (self.backlog_bytes + size) / rate

    def admit(self, size: int, encoding: str, labels: dict[str, str]) -> Hold:
        """A hold on the memory to decode a payload of `size` bytes, or the refusal."""
        limits = self.limits
        if self.queued_items >= limits.max_queue_items:
            self._refuse("queue_items", labels, "ingest queue is full (items)")
        wait = self.expected_wait(size)
        if wait is not None and self.inflight >= MIN_QUEUE and wait > limits.max_wait_s:
            self._refuse(
                "wait",
                labels,
                f"ingest queue is full: a request would wait ~{wait:.0f}s "
                f"(limits.max_wait_s is {limits.max_wait_s:g})",
            )
        hold = Hold(self, labels)
        hold.factor = DECODE_FACTOR.get(encoding, DECODE_FACTOR["json"])
        hold.grow(size * hold.factor)
        hold.started = time.monotonic()
        self.backlog_bytes += size
        hold.payload = size
        if self.inflight == 0:
            self.throughput.busy(hold.started)
        self.inflight += 1
        return hold

    def reading(self, labels: dict[str, str]) -> Hold:
        """A hold a receiver grows by the bytes of a body as they arrive (and their copies), so
        bodies being received count before the request is admitted; released when it is."""
        return Hold(self, labels, counted=False)

    def _refuse(self, reason: str, labels: dict[str, str], message: str) -> None:
        self._metrics.inc("agentledger_requests_refused_total", reason=reason, **labels)
        raise Overloaded(message, self.limits.retry_after_s)


class Hold:
    """What one request holds; grown as it is decoded, given back when it is answered."""

    def __init__(self, admission: Admission, labels: dict[str, str], counted: bool = True) -> None:
        self._a = admission
        self._counted = counted  # an admitted request (not a body being read)
        self._labels = labels
        self.bytes = 0
        self.items = 0
        self.payload = 0
        self.factor = 1
        self.started = 0.0
        self._released = False

    def grow(self, n: int) -> None:
        """Hold `n` more bytes. Refused when the bound cannot take them: permanently if this
        request alone would pass it, else until the others are answered."""
        a = self._a
        limit = a.limits.max_queue_bytes
        if self.bytes + n > limit:
            a._metrics.inc("agentledger_requests_refused_total", reason="too_large", **self._labels)
            raise TooLarge(
                f"the request needs more than limits.max_queue_mib ({limit // 2**20} MiB) of "
                f"memory to decode and hold its rows; send it in smaller batches"
            )
        if a.held_bytes + n > limit and a.held_bytes > self.bytes:
            a._refuse("queue_bytes", self._labels, "ingest queue is full (bytes)")
        self.bytes += n
        a.held_bytes += n

    def part_decoded(self, part_bytes: int, decoded_bytes: int) -> None:
        """A part of the payload came back decoded: its copies are gone, its rows are held."""
        self.shrink_to(max(self.payload, self.bytes - (self.factor - 1) * part_bytes))
        self.grow(decoded_bytes)

    def shrink_to(self, n: int) -> None:
        if n < self.bytes:
            self._a.held_bytes -= self.bytes - n
            self.bytes = n

    def add_items(self, n: int) -> None:
        """Decoded items waiting for their commit (refused past `max_queue_items` while
        others are queued: a burst passes the first check together)."""
        a = self._a
        if a.queued_items and a.queued_items + n > a.limits.max_queue_items:
            a._refuse("queue_items", self._labels, "ingest queue is full (items)")
        self.items += n
        a.queued_items += n

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        a = self._a
        a.held_bytes -= self.bytes
        a.queued_items -= self.items
        if not self._counted:
            return
        a.backlog_bytes -= self.payload
        a.inflight -= 1
        now = time.monotonic()
        a.throughput.done(self.payload, now)
        if a.inflight == 0:
            a.throughput.idle(now)
