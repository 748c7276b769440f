"""The ingest pipeline: admission control, decode + processors (in worker processes), export.

Receivers call `Pipeline.consume` with an `IngestRequest`; the decoded, processed `Rows` go to
every exporter of the signal's pipeline, and the store exporter's answer is the acknowledgement.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa

from collector.admission import Admission, Limits
from collector.chunks import split
from collector.configparse import ConfigIssue, bounds, parse_duration
from collector.decode import DEFAULT_LIMITS, DecodeLimits, decode_batches
from collector.heap import return_large_buffers, trim_memory
from collector.model import (
    Accepted,
    Batch,
    Counters,
    Exporter,
    IngestRequest,
    Overloaded,
    Processor,
    Rows,
    Signal,
    StoreUnavailable,
)
from collector.store.schema import arrow_schema, to_table
from collector.telemetry import Metrics

__all__ = ["DecodePool", "Limits", "LimitsConfig", "Pipeline", "process_payload"]

log = logging.getLogger(__name__)
MIB = 1024 * 1024
T = TypeVar("T")

CHUNK_BYTES = 512 * 1024
"""Protobuf requests larger than this go to the workers in chunks of whole items this big."""

ProcessorFactory = Callable[[], dict[Signal, list[Processor]]]
"""Builds each signal's processor chain; picklable, so worker processes build their own."""

# The processor chains of this worker process, set by the pool's initializer and rebuilt from
# the same factory when the pool's generation moves on (`DecodePool.reload`: a new price book).
_worker_chains: dict[Signal, list[Processor]] = {}
_worker_factory: list[ProcessorFactory] = []
_worker_generation = [0]


def _init_worker(factory: ProcessorFactory) -> None:
    _exit_with_parent()  # first: building the chains can take a while
    return_large_buffers()
    _worker_chains.clear()
    _worker_chains.update(factory())
    _worker_factory[:] = [factory]


def _exit_with_parent() -> None:
    """A SIGKILLed server cannot shut its pool down: its workers must not outlive it.

    multiprocessing gives each child the read end of a pipe whose write end only the parent
    holds; it reads as closed the moment the parent is gone, also if that happened before this
    child got here (where a parent pid read now would already be init's).
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _warm() -> int:
    return os.getpid()


TRIM_AFTER_BYTES = 1024 * 1024
"""A request this big leaves freed memory the allocator keeps unless asked to give it back."""


@dataclass
class Processed:
    """What decoding and processing one request (or chunk) gives."""

    tables: list[pa.Table] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    counters: Counters = field(default_factory=dict)

    def add(self, other: Processed) -> None:
        self.tables += other.tables
        self.rejected += other.rejected
        self.reasons += other.reasons
        for key, n in other.counters.items():
            self.counters[key] = self.counters.get(key, 0) + n

    def table(self, signal: Signal) -> pa.Table:
        if not self.tables:
            return arrow_schema(signal).empty_table()
        return self.tables[0] if len(self.tables) == 1 else pa.concat_tables(self.tables)

    def message(self) -> str:
        return "; ".join(dict.fromkeys(self.reasons))  # each reason once, in order


def process_payload(
    signal: Signal, org: str, payload: bytes, encoding: str, chains: dict[Signal, list[Processor]]
) -> tuple[pa.Table, int]:
    """Decode a request and run the signal's processors: the whole per-item CPU cost of ingest."""
    done = process_counted(signal, org, payload, encoding, chains)
    return done.table(signal), done.rejected


def process_counted(
    signal: Signal,
    org: str,
    payload: bytes,
    encoding: str,
    chains: dict[Signal, list[Processor]],
    *,
    limits: DecodeLimits | None = None,
) -> Processed:
    """`process_payload`, a batch at a time, with why items were refused and what the
    processors counted for /metrics."""
    done = Processed()
    chain = chains.get(signal, ())
    for batch in decode_batches(signal, org, payload, encoding, limits=limits or DEFAULT_LIMITS):
        if batch.rejected:
            done.reasons.append(f"{batch.rejected} {_items(signal)} had no valid trace_id/span_id")
        done.add(_process(batch, chain))
    return done


def _process(batch: Batch, chain: Sequence[Processor]) -> Processed:
    # Processors rewrite a batch's lists in place: keep the decoded ones to retry item by item.
    original = _copy(batch)
    try:
        for processor in chain:
            batch = processor.process(batch)
        table = to_table(batch.signal, batch.columns, len(batch))
    except MemoryError:
        raise
    except Exception:
        # An item no processor or column can take (a number past BIGINT, a value a processor
        # trips on) fails the same way on every retry: refuse only the items that fail, as a
        # partial success, never the whole request as retryable.
        log.warning("processing a batch failed; processing its items one by one", exc_info=True)
        return _item_by_item(original, chain)
    return Processed([table], batch.rejected, [], batch.counters)


def _item_by_item(batch: Batch, chain: Sequence[Processor]) -> Processed:
    done = _isolate(batch, chain)
    done.rejected += batch.rejected
    for key, n in batch.counters.items():
        done.counters[key] = done.counters.get(key, 0) + n
    return done


def _isolate(batch: Batch, chain: Sequence[Processor]) -> Processed:
    """Process halves of a batch that failed, down to the items that fail alone: a few poison
    items among thousands cost a few dozen runs, not one per item."""
    one = _copy(batch)
    one.rejected, one.counters = 0, {}
    try:
        for processor in chain:
            one = processor.process(one)
        table = to_table(one.signal, one.columns, len(one))
    except MemoryError:
        raise
    except Exception as e:
        n = len(batch)
        if n > 1:
            done = _isolate(batch.select(list(range(n // 2))), chain)
            done.add(_isolate(batch.select(list(range(n // 2, n))), chain))
            return done
        reason = (
            f"{_items(batch.signal)} that could not be stored were refused "
            f"({type(e).__name__}: {str(e)[:200]})"
        )
        return Processed(rejected=1, reasons=[reason])
    return Processed([table], 0, [], one.counters)


def _copy(batch: Batch) -> Batch:
    return Batch(
        batch.signal,
        batch.org,
        {k: list(v) for k, v in batch.columns.items()},
        list(batch.attributes),
        list(batch.resources),
        list(batch.events),
        batch.rejected,
        dict(batch.counters),
    )


def _items(signal: Signal) -> str:
    return {Signal.TRACES: "spans", Signal.LOGS: "log records", Signal.METRICS: "data points"}[
        signal
    ]


def _work_in_process(
    signal: Signal,
    org: str,
    payload: bytes,
    encoding: str,
    *,
    generation: int = 0,
    limits: DecodeLimits | None = None,
) -> tuple[bytes, int, list[str], Counters]:
    if generation != _worker_generation[0]:
        _worker_generation[0] = generation
        try:
            chains = _worker_factory[0]()
        except Exception:  # keep decoding with the chains it has; the service logs its side
            log.exception("decode worker could not rebuild its processors; keeping the old ones")
        else:
            _worker_chains.clear()
            _worker_chains.update(chains)
    done = process_counted(signal, org, payload, encoding, _worker_chains, limits=limits)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, arrow_schema(signal)) as writer:
        for table in done.tables:
            writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    result = data, done.rejected, done.reasons, done.counters
    if len(payload) >= TRIM_AFTER_BYTES or len(data) >= TRIM_AFTER_BYTES:
        done.tables.clear()
        del sink
        trim_memory()
    return result


class DecodePool:
    """Decodes in `workers` processes (0: in a thread of this process).

    Python reads protobuf attributes at ~15 µs a span; worker processes let that use every core
    while this process only moves bytes and commits. Arrow IPC carries the result back. A large
    protobuf request goes in chunks (`collector/chunks.py`), so a worker holds one at a time.
    """

    def __init__(
        self, workers: int, factory: ProcessorFactory, limits: DecodeLimits | None = None
    ) -> None:
        self._workers = workers
        self._factory = factory
        self._limits = limits or DEFAULT_LIMITS
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
        pool = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self._factory,),
        )
        # Start every worker now (each submit without an idle worker spawns one), so the first
        # requests do not wait for them and a server killed early already has them watching.
        for _ in range(self._workers):
            pool.submit(_warm)
        return pool

    async def run(
        self,
        signal: Signal,
        org: str,
        payload: bytes,
        encoding: str,
        on_part: Callable[[int, int], None] | None = None,
    ) -> Rows:
        """Decode and process a request; `on_part(part bytes, decoded bytes)` is told of each
        part as it comes back decoded (and may raise to refuse the rest)."""
        executor = self._executor
        if executor is None:
            raise StoreUnavailable("the decoder is not running")
        parts = [payload]
        if encoding == "protobuf" and len(payload) > CHUNK_BYTES:
            parts = await asyncio.to_thread(split, payload, CHUNK_BYTES)
        if isinstance(executor, ThreadPoolExecutor):
            done = Processed()
            for part in parts:
                one = await asyncio.wrap_future(
                    executor.submit(
                        process_counted,
                        signal,
                        org,
                        part,
                        encoding,
                        self._chains,
                        limits=self._limits,
                    )
                )
                if on_part is not None:
                    on_part(len(part), sum(t.nbytes for t in one.tables))
                done.add(one)
            return self._rows(signal, org, done.table(signal), done)
        if self._slots is None:
            self._slots = asyncio.Semaphore(2 * self._workers)
        futures: list[Future[tuple[bytes, int, list[str], Counters]]] = []
        try:
            async with self._slots:
                sizes = [len(part) for part in parts]
                futures = [
                    executor.submit(
                        _work_in_process,
                        signal,
                        org,
                        part,
                        encoding,
                        generation=self._generation,
                        limits=self._limits,
                    )
                    for part in parts
                ]
                del parts
                done = Processed()
                for future, size in zip(futures, sizes, strict=True):
                    data, rejected, reasons, counters = await asyncio.wrap_future(future)
                    if on_part is not None:
                        on_part(size, len(data))
                    table = pa.ipc.open_stream(data).read_all()
                    done.add(Processed([table], rejected, reasons, counters))
        except BrokenProcessPool as e:
            # A worker died (OOM kill, crash): replace the pool; this request is retryable.
            log.error("decode worker died; restarting the pool")
            if self._executor is executor:
                self._executor = self._new_process_pool()
                executor.shutdown(wait=False, cancel_futures=True)
            raise StoreUnavailable("decode worker restarted") from e
        finally:
            for future in futures:
                future.cancel()  # the rest of a refused request: not decoded for nothing
        return self._rows(signal, org, done.table(signal), done)

    @staticmethod
    def _rows(signal: Signal, org: str, table: pa.Table, done: Processed) -> Rows:
        return Rows(
            signal,
            org,
            table,
            done.rejected,
            counters=done.counters,
            rejection_message=done.message(),
        )

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
        spans_gate: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`spans_gate` holds a request of spans while derivation is behind, and raises
        `Overloaded` while spans must wait (derivation is past its bound)."""
        self._pool = pool
        self._spans_gate = spans_gate
        self._exporters = exporters
        self._metrics = metrics
        self.admission = Admission(limits, metrics)
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False
        self._trim_due = False
        self._last_trim = 0.0
        for name, text in (
            ("agentledger_decode_truncated_values_total", "strings cut to the value limit"),
            ("agentledger_decode_dropped_total", "attributes, events, links over the limits"),
            ("agentledger_decode_clamped_values_total", "times and counts past BIGINT, clamped"),
        ):
            metrics.describe(name, "counter", text)

    @property
    def queued_items(self) -> int:
        return self.admission.queued_items

    async def consume(self, req: IngestRequest) -> Accepted:
        labels = {"transport": req.transport, "signal": req.signal.name.lower()}
        if self._draining:
            raise StoreUnavailable("the collector is shutting down")
        if req.signal is Signal.TRACES and self._spans_gate is not None:
            try:
                await self._spans_gate()
            except Overloaded:
                reason = "derivation_lag"
                self._metrics.inc("agentledger_requests_refused_total", reason=reason, **labels)
                raise
        size = len(req.payload)
        hold = self.admission.admit(size, req.encoding, labels)
        self._idle.clear()
        try:
            rows = await self._pool.run(
                req.signal, req.principal.org, req.payload, req.encoding, hold.part_decoded
            )
            # Decoded: what it holds now is its payload (the receiver keeps it) and its rows.
            hold.shrink_to(size + rows.table.nbytes)
            self._metrics.inc(
                "agentledger_items_received_total", rows.count + rows.rejected, **labels
            )
            for (metric, label, value), n in rows.counters.items():
                self._metrics.inc(metric, n, **{label: value})
            hold.add_items(rows.count)
            return await self._export(req.signal, rows, labels)
        finally:
            hold.release()
            if self.admission.inflight == 0:
                self._idle.set()
            if size >= TRIM_AFTER_BYTES and not self._trim_due:
                # At most once a second (a trim walks the heap: milliseconds), off the loop.
                self._trim_due = True
                delay = max(0.0, 1.0 - (time.monotonic() - self._last_trim))
                asyncio.get_running_loop().call_later(delay, self._trim)

    def _trim(self) -> None:
        self._trim_due = False
        self._last_trim = time.monotonic()
        # Large payloads can sit in reference cycles (a refused gRPC call's traceback holds its
        # frame) until the cyclic collector's rare full pass: collect, then hand memory back.
        gc.collect()
        asyncio.get_running_loop().run_in_executor(None, trim_memory)

    async def _export(self, signal: Signal, rows: Rows, labels: dict[str, str]) -> Accepted:
        exporters = self._exporters.get(signal, ())
        if not exporters:
            return Accepted(0, 0, rows.count, "no pipeline is configured for this signal")
        results = await asyncio.gather(*(e.export(rows) for e in exporters))
        result = results[0]
        self._metrics.inc("agentledger_items_accepted_total", result.accepted, **labels)
        self._metrics.inc("agentledger_items_deduplicated_total", result.duplicates, **labels)
        self._metrics.inc("agentledger_items_rejected_total", result.rejected, **labels)
        return result

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
    """The `limits:` section: admission bounds, decode workers and per-item decode limits."""

    max_queue_items: int = field(default=200_000, metadata=bounds(ge=1))
    max_queue_mib: int = field(default=128, metadata=bounds(ge=1))
    max_wait_s: float = field(default=3.0, metadata=bounds(ge=0.1))
    decode_workers: int = field(default=2, metadata=bounds(ge=0))  # 0: decode in the server
    retry_after_s: int = field(default=1, metadata=bounds(ge=1))
    attribute_count_limit: int = field(default=1024, metadata=bounds(ge=1))
    attribute_value_length_limit: int = field(default=1024 * 1024, metadata=bounds(ge=1))
    event_count_limit: int = field(default=1024, metadata=bounds(ge=0))
    link_count_limit: int = field(default=1024, metadata=bounds(ge=0))

    def admission(self, queue_bytes: int | None = None) -> Limits:
        """The admission bounds; `queue_bytes` replaces max_queue_mib (memory_limiter's)."""
        return Limits(
            self.max_queue_items,
            queue_bytes if queue_bytes is not None else self.max_queue_mib * MIB,
            float(self.retry_after_s),
            self.max_wait_s,
        )

    def decode(self) -> DecodeLimits:
        return DecodeLimits(
            attribute_count=self.attribute_count_limit,
            attribute_value_length=self.attribute_value_length_limit,
            event_count=self.event_count_limit,
            link_count=self.link_count_limit,
        )
