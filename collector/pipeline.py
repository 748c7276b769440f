"""The ingest pipeline: admission control, decode + processors (in worker processes), export.

Receivers call `Pipeline.consume` with an `IngestRequest`; the decoded, processed `Rows` go to
every exporter of the signal's pipeline, and the store exporter's answer is the acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa

from collector.configparse import ConfigIssue, bounds, parse_duration
from collector.decode import decode
from collector.model import (
    Accepted,
    Counters,
    Exporter,
    IngestRequest,
    Overloaded,
    Processor,
    Rows,
    Signal,
    StoreUnavailable,
)
from collector.store.schema import to_table
from collector.telemetry import Metrics

log = logging.getLogger(__name__)
MIB = 1024 * 1024
T = TypeVar("T")

ProcessorFactory = Callable[[], dict[Signal, list[Processor]]]
"""Builds each signal's processor chain; picklable, so worker processes build their own."""

# The processor chains of this worker process, set by the pool's initializer and rebuilt from
# the same factory when the pool's generation moves on (`DecodePool.reload`: a new price book).
_worker_chains: dict[Signal, list[Processor]] = {}
_worker_factory: list[ProcessorFactory] = []
_worker_generation = [0]


def _init_worker(factory: ProcessorFactory) -> None:
    _worker_chains.clear()
    _worker_chains.update(factory())
    _worker_factory[:] = [factory]
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    # A SIGKILLed server cannot shut its pool down; its workers must not outlive it.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def process_payload(
    signal: Signal, org: str, payload: bytes, encoding: str, chains: dict[Signal, list[Processor]]
) -> tuple[pa.Table, int]:
    """Decode a request and run the signal's processors: the whole per-item CPU cost of ingest."""
    table, rejected, _ = process_counted(signal, org, payload, encoding, chains)
    return table, rejected


def process_counted(
    signal: Signal, org: str, payload: bytes, encoding: str, chains: dict[Signal, list[Processor]]
) -> tuple[pa.Table, int, Counters]:
    """`process_payload`, with what the processors counted for /metrics."""
    batch = decode(signal, org, payload, encoding)
    for processor in chains.get(signal, ()):
        batch = processor.process(batch)
    return to_table(signal, batch.columns, len(batch)), batch.rejected, batch.counters


def _work_in_process(
    signal: Signal, org: str, payload: bytes, encoding: str, generation: int = 0
) -> tuple[bytes, int, Counters]:
    if generation != _worker_generation[0]:
        _worker_generation[0] = generation
        try:
            chains = _worker_factory[0]()
        except Exception:  # keep decoding with the chains it has; the service logs its side
            log.exception("decode worker could not rebuild its processors; keeping the old ones")
        else:
            _worker_chains.clear()
            _worker_chains.update(chains)
    table, rejected, counters = process_counted(signal, org, payload, encoding, _worker_chains)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes(), rejected, counters


@dataclass(frozen=True)
class Limits:
    max_queue_items: int = 200_000
    max_queue_bytes: int = 256 * 1024 * 1024
    retry_after_s: float = 1.0


class DecodePool:
    """Decodes in `workers` processes (0: in a thread of this process).

    Python reads protobuf attributes at ~15 µs a span; worker processes let that use every core
    while this process only moves bytes and commits. Arrow IPC carries the result back.
    """

    def __init__(self, workers: int, factory: ProcessorFactory) -> None:
        self._workers = workers
        self._factory = factory
        self._executor: Executor | None = None
        self._chains: dict[Signal, list[Processor]] = {}
        self._generation = 0
        # Requests decoding or queued for a worker: a few per worker keep them busy, and
        # `call`s (run derivation) then wait behind those few, not behind every request.
        self._slots: asyncio.Semaphore | None = None

    def start(self) -> None:
        if self._workers == 0:
            self._chains = self._factory()
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")
        else:
            self._executor = self._new_process_pool()

    def _new_process_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: this process runs gRPC and DuckDB threads that must not be forked.
        return ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self._factory,),
        )

    async def run(self, signal: Signal, org: str, payload: bytes, encoding: str) -> Rows:
        loop = asyncio.get_running_loop()
        executor = self._executor
        if executor is None:
            raise StoreUnavailable("the decoder is not running")
        if isinstance(executor, ThreadPoolExecutor):
            table, rejected, counters = await loop.run_in_executor(
                executor, process_counted, signal, org, payload, encoding, self._chains
            )
            return Rows(signal, org, table, rejected, counters=counters)
        if self._slots is None:
            self._slots = asyncio.Semaphore(2 * self._workers)
        try:
            async with self._slots:
                data, rejected, counters = await loop.run_in_executor(
                    executor, _work_in_process, signal, org, payload, encoding, self._generation
                )
        except BrokenProcessPool as e:
            # A worker died (OOM kill, crash): replace the pool; this request is retryable.
            log.error("decode worker died; restarting the pool")
            if self._executor is executor:
                self._executor = self._new_process_pool()
                executor.shutdown(wait=False, cancel_futures=True)
            raise StoreUnavailable("decode worker restarted") from e
        table = pa.ipc.open_stream(data).read_all()
        return Rows(signal, org, table, rejected, counters=counters)

    def reload(self) -> None:
        """Rebuild the processor chains from the factory (it reads the current price book):
        each worker process does so before its next batch; batches in flight finish as they
        began."""
        if isinstance(self._executor, ThreadPoolExecutor):
            self._chains = self._factory()
        self._generation += 1

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a picklable `fn(*args)` in a worker process and wait (from any thread)."""
        executor = self._executor
        if executor is None or isinstance(executor, ThreadPoolExecutor):
            return fn(*args)
        try:
            return executor.submit(fn, *args).result()
        except BrokenProcessPool as e:
            raise StoreUnavailable("decode worker restarted") from e

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)
            self._executor = None


class Pipeline:
    """Admission control and fan-out; the first exporter of a signal is the durable one."""

    def __init__(
        self,
        pool: DecodePool,
        exporters: Mapping[Signal, Sequence[Exporter]],
        limits: Limits,
        metrics: Metrics,
        spans_gate: Callable[[], None] | None = None,
    ) -> None:
        """`spans_gate` raises `Overloaded` while spans must wait (derivation is behind)."""
        self._pool = pool
        self._spans_gate = spans_gate
        self._exporters = exporters
        self._limits = limits
        self._metrics = metrics
        self._queued_bytes = 0
        self._queued_items = 0
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False
        metrics.gauge(
            "agentledger_queue_items",
            "items decoded and waiting for commit",
            lambda: float(self._queued_items),
        )
        metrics.gauge(
            "agentledger_queue_bytes",
            "request bytes admitted and not yet committed",
            lambda: float(self._queued_bytes),
        )

    @property
    def queued_items(self) -> int:
        return self._queued_items

    async def consume(self, req: IngestRequest) -> Accepted:
        labels = {"transport": req.transport, "signal": req.signal.name.lower()}
        if self._draining:
            raise StoreUnavailable("the collector is shutting down")
        if req.signal is Signal.TRACES and self._spans_gate is not None:
            try:
                self._spans_gate()
            except Overloaded:
                reason = "derivation_lag"
                self._metrics.inc("agentledger_requests_refused_total", reason=reason, **labels)
                raise
        size = len(req.payload)
        if self._queued_bytes + size > self._limits.max_queue_bytes and self._queued_bytes:
            self._metrics.inc("agentledger_requests_refused_total", reason="queue_bytes", **labels)
            raise Overloaded("ingest queue is full (bytes)", self._limits.retry_after_s)
        if self._queued_items >= self._limits.max_queue_items:
            self._metrics.inc("agentledger_requests_refused_total", reason="queue_items", **labels)
            raise Overloaded("ingest queue is full (items)", self._limits.retry_after_s)
        self._queued_bytes += size
        self._inflight += 1
        self._idle.clear()
        items = 0
        try:
            rows = await self._pool.run(req.signal, req.principal.org, req.payload, req.encoding)
            self._metrics.inc(
                "agentledger_items_received_total", rows.count + rows.rejected, **labels
            )
            for (metric, label, value), n in rows.counters.items():
                self._metrics.inc(metric, n, **{label: value})
            # Items are known only once decoded: a burst of requests passes the check above
            # together, so check again before holding their rows for the commit.
            if (
                self._queued_items
                and self._queued_items + rows.count > self._limits.max_queue_items
            ):
                self._metrics.inc(
                    "agentledger_requests_refused_total", reason="queue_items", **labels
                )
                raise Overloaded("ingest queue is full (items)", self._limits.retry_after_s)
            items = rows.count
            self._queued_items += items
            exporters = self._exporters.get(req.signal, ())
            if not exporters:
                return Accepted(0, 0, items, "no pipeline is configured for this signal")
            results = await asyncio.gather(*(e.export(rows) for e in exporters))
            result = results[0]
            self._metrics.inc("agentledger_items_accepted_total", result.accepted, **labels)
            self._metrics.inc("agentledger_items_deduplicated_total", result.duplicates, **labels)
            self._metrics.inc("agentledger_items_rejected_total", result.rejected, **labels)
            return result
        finally:
            self._queued_items -= items
            self._queued_bytes -= size
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def drain(self) -> None:
        """Refuse new requests and wait until every admitted one has been answered."""
        self._draining = True
        await self._idle.wait()


@dataclass(frozen=True, kw_only=True)
class MemoryLimiterConfig:
    """The OpenTelemetry Collector's `memory_limiter` processor, read as the admission bound when
    a pipeline lists it: requests are refused (503 / UNAVAILABLE, retryable) while the memory held
    by waiting requests is above the soft limit, `limit - spike_limit`, exactly as the Collector
    refuses above its soft limit. Limits are in MiB, or in percent of this machine's memory;
    the spike defaults to 20% of the limit. It replaces `limits.max_queue_mib`; `check_interval`
    is accepted (admission is checked on every request here)."""

    check_interval: str = "0s"
    limit_mib: int = field(default=0, metadata=bounds(ge=0))
    spike_limit_mib: int = field(default=0, metadata=bounds(ge=0))
    limit_percentage: int = field(default=0, metadata=bounds(ge=0, le=100))
    spike_limit_percentage: int = field(default=0, metadata=bounds(ge=0, le=100))

    def queue_bytes(self, total_memory: int) -> int:
        """The soft limit in bytes, given the machine's memory."""
        limit = self.limit_mib * MIB or total_memory * self.limit_percentage // 100
        spike = (
            self.spike_limit_mib * MIB
            or total_memory * self.spike_limit_percentage // 100
            or limit // 5
        )
        return max(MIB, limit - spike)

    def validate(self) -> list[ConfigIssue]:
        issues: list[ConfigIssue] = []
        try:
            parse_duration(self.check_interval)
        except ValueError as e:
            issues.append(ConfigIssue("check_interval", str(e)))
        if not self.limit_mib and not self.limit_percentage:
            issues.append(ConfigIssue("limit_mib", "set limit_mib or limit_percentage"))
        if self.limit_mib and self.spike_limit_mib >= self.limit_mib:
            issues.append(ConfigIssue("spike_limit_mib", "must be below limit_mib"))
        if self.limit_percentage and self.spike_limit_percentage >= self.limit_percentage:
            issues.append(ConfigIssue("spike_limit_percentage", "must be below limit_percentage"))
        return issues


def total_memory() -> int:
    """This machine's memory in bytes (the base of memory_limiter's percentages)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True, kw_only=True)
class LimitsConfig:
    max_queue_items: int = field(default=200_000, metadata=bounds(ge=1))
    max_queue_mib: int = field(default=256, metadata=bounds(ge=1))
    decode_workers: int = field(default=2, metadata=bounds(ge=0))  # 0: decode in the server
    retry_after_s: int = field(default=1, metadata=bounds(ge=1))
