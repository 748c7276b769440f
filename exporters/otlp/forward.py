"""The OTLP forward exporters (`otlp:` gRPC, `otlphttp:` HTTP/protobuf) with a disk queue.

The pipeline hands each processed (redacted) batch to `export`, which only appends it to the
on-disk queue; a sender thread rebuilds the OTLP request and delivers it to another collector
or backend with retries, so a slow or absent target never holds up ingest.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from collector.configparse import INVALID, ConfigIssue, bounds
from collector.model import Accepted, Rows, Signal, StoreUnavailable
from collector.store.writer import Store
from exporters.otlp.diskqueue import DiskQueue, QueueFull
from exporters.otlp.encode import encode, from_record, to_record
from exporters.otlp.send import GrpcSender, HttpSender, Permanent, Retryable, Sender

log = logging.getLogger(__name__)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(raw: object, path: str, errors: list[ConfigIssue]) -> object:
    """`5s`, `500ms`, `1m`, `2h` (the Collector's spelling) or a number of seconds."""
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw >= 0:
        return float(raw)
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*", str(raw))
    if isinstance(raw, str) and m:
        return float(m.group(1)) * _UNITS[m.group(2)]
    errors.append(ConfigIssue(path, f"expected a duration such as 5s or 500ms, got {raw!r}"))
    return INVALID


def _duration(default: float) -> Any:
    return field(default=default, metadata={"parser": parse_duration})


@dataclass(frozen=True)
class TlsConfig:
    insecure: bool = False  # gRPC: plaintext
    insecure_skip_verify: bool = False
    ca_file: str | None = None


@dataclass(frozen=True)
class SendingQueueConfig:
    """The disk queue: `storage` is its directory (default <storage.path>/forward/<exporter>-
    <endpoint>); `queue_size` batches (one per ingest request) and `max_mib` bound it. Full: the
    oldest batches are dropped, counted and logged, so ingest never waits for the target."""

    enabled: bool = True
    storage: str | None = None
    queue_size: int = field(default=10_000, metadata=bounds(ge=1))
    max_mib: int = field(default=1024, metadata=bounds(ge=1))
    fsync: bool = True

    def validate(self) -> list[str]:
        if not self.enabled:
            return ["enabled: the forward exporter always queues on disk (ingest never waits)"]
        return []


@dataclass(frozen=True)
class RetryConfig:
    """`max_elapsed_time` 0 retries a batch until it is delivered (or dropped for room)."""

    enabled: bool = True
    initial_interval: float = _duration(1.0)
    max_interval: float = _duration(30.0)
    max_elapsed_time: float = _duration(0.0)
    multiplier: float = field(default=1.5, metadata=bounds(ge=1))


@dataclass(frozen=True)
class OtlpExporterConfig:
    """The Collector's `otlp` / `otlphttp` exporter settings."""

    endpoint: str
    headers: dict[str, str] = field(default_factory=dict)
    compression: Literal["gzip", "none"] = "gzip"
    timeout: float = _duration(10.0)
    tls: TlsConfig = field(default_factory=TlsConfig)
    sending_queue: SendingQueueConfig = field(default_factory=SendingQueueConfig)
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)
    traces_endpoint: str | None = None  # otlphttp only: full URLs per signal
    logs_endpoint: str | None = None
    metrics_endpoint: str | None = None

    def validate(self) -> list[ConfigIssue]:
        if not self.endpoint:
            return [ConfigIssue("endpoint", "must not be empty")]
        return []


@dataclass(frozen=True)
class OtlpHttpExporterConfig(OtlpExporterConfig):
    """`otlphttp`: `endpoint` is the base URL; `/v1/traces` etc. are appended."""

    def validate(self) -> list[ConfigIssue]:
        urls = [
            ("endpoint", self.endpoint),
            ("traces_endpoint", self.traces_endpoint),
            ("logs_endpoint", self.logs_endpoint),
            ("metrics_endpoint", self.metrics_endpoint),
        ]
        return [
            ConfigIssue(name, f"must be an http:// or https:// URL, got {value!r}")
            for name, value in urls
            if value is not None and not re.match(r"https?://[^/]", value)
        ]


class OtlpExporter:
    """One forward target. `kind` is `otlp` (gRPC) or `otlphttp`."""

    def __init__(self, kind: str, config: OtlpExporterConfig, store: Store) -> None:
        self.name = f"{kind} {config.endpoint}"
        self._kind = kind
        self._config = config
        q = config.sending_queue
        slug = re.sub(r"[^A-Za-z0-9.]+", "_", config.endpoint).strip("_")
        default = Path(store.settings.data_path).parent / "forward" / f"{kind}-{slug}"
        self._queue = DiskQueue(
            Path(q.storage) if q.storage else default,
            max_records=q.queue_size,
            max_bytes=q.max_mib * 1024 * 1024,
            fsync=q.fsync,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sender: Sender | None = None
        self.stats: Counter[str] = Counter()

    async def start(self) -> None:
        await asyncio.to_thread(self._queue.open)
        c = self._config
        gz = c.compression == "gzip"
        if self._kind == "otlp":
            self._sender = GrpcSender(
                c.endpoint, headers=c.headers, gzip_on=gz, timeout_s=c.timeout,
                insecure=c.tls.insecure, ca_file=c.tls.ca_file,
            )  # fmt: skip
        else:
            urls = {Signal.TRACES: c.traces_endpoint, Signal.LOGS: c.logs_endpoint,
                    Signal.METRICS: c.metrics_endpoint}  # fmt: skip
            self._sender = HttpSender(
                c.endpoint, urls=urls, headers=c.headers, gzip_on=gz, timeout_s=c.timeout,
                insecure_skip_verify=c.tls.insecure_skip_verify, ca_file=c.tls.ca_file,
            )  # fmt: skip
        if self._queue.records:
            log.info("forward %s: %d batches queued from before", self.name, self._queue.records)
        self._thread = threading.Thread(target=self._run, name=f"forward-{self._kind}", daemon=True)
        self._thread.start()

    async def export(self, rows: Rows) -> Accepted:
        """Queue the rows durably (fsync) and return; delivery happens in the background."""
        if rows.signal is None or not rows.count:
            return Accepted(rows.count, 0, rows.rejected)
        try:
            dropped = await asyncio.to_thread(self._append, rows)
        except QueueFull as e:
            log.error("forward %s: batch not queued: %s", self.name, e)
            self.stats["dropped_too_large"] += 1
            return Accepted(rows.count, 0, rows.rejected)
        except OSError as e:
            log.error("forward %s: cannot write the queue: %s", self.name, e)
            raise StoreUnavailable("the forward queue cannot be written") from e
        if dropped:
            self.stats["dropped_queue_full"] += dropped
            log.warning("forward %s: queue full; dropped the %d oldest batches", self.name, dropped)
        return Accepted(rows.count, 0, rows.rejected)

    def _append(self, rows: Rows) -> int:
        return self._queue.append(to_record(rows))

    async def shutdown(self) -> None:
        """Stop the sender (a send in flight finishes or times out); queued data stays."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self._config.timeout + 5)
            self._thread = None
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        await asyncio.to_thread(self._queue.close)

    # -- the sender thread -----------------------------------------------------------------

    def _run(self) -> None:
        retry = self._config.retry_on_failure
        delay = retry.initial_interval
        first_failure: float | None = None
        while not self._stop.is_set():
            item = self._queue.peek()
            if item is None:
                self._queue.wait(0.5)
                continue
            position, record = item
            signal, table = from_record(record)
            try:
                assert self._sender is not None
                self._sender.send(signal, encode(signal, table))
            except Retryable as e:
                now = time.monotonic()
                first_failure = first_failure or now
                self.stats["send_failures"] += 1
                expired = retry.max_elapsed_time and now - first_failure > retry.max_elapsed_time
                if retry.enabled and not expired:
                    if delay == retry.initial_interval:
                        log.warning("forward %s: %s; retrying", self.name, e)
                    self._stop.wait(max(delay, e.retry_after_s or 0.0))
                    delay = min(delay * retry.multiplier, retry.max_interval)
                    continue
                log.error("forward %s: gave up on a batch of %d: %s", self.name, len(table), e)
                self.stats[f"dropped_{signal.name.lower()}"] += len(table)
            except Permanent as e:
                log.error("forward %s: target refused %d items: %s", self.name, len(table), e)
                self.stats[f"dropped_{signal.name.lower()}"] += len(table)
            except Exception:
                log.exception("forward %s: could not send a batch; dropped", self.name)
                self.stats[f"dropped_{signal.name.lower()}"] += len(table)
            else:
                self.stats[f"sent_{signal.name.lower()}"] += len(table)
                if first_failure is not None:
                    log.info("forward %s: delivering again", self.name)
            first_failure, delay = None, retry.initial_interval
            self._queue.ack(position)

    def metric_lines(self) -> list[str]:
        """Prometheus lines for /metrics (the service adds them)."""
        name = self.name.replace("\\", "\\\\").replace('"', '\\"')
        label = f'exporter="{name}"'
        s = self.stats
        lines = [
            "# TYPE agentledger_forward_queue_batches gauge",
            f"agentledger_forward_queue_batches{{{label}}} {self._queue.records}",
            "# TYPE agentledger_forward_queue_bytes gauge",
            f"agentledger_forward_queue_bytes{{{label}}} {self._queue.size_bytes}",
            "# TYPE agentledger_forward_items_sent_total counter",
        ]
        for signal in Signal:
            kind = signal.name.lower()
            sent = s[f"sent_{kind}"]
            lines.append(f'agentledger_forward_items_sent_total{{{label},signal="{kind}"}} {sent}')
        lines.append("# TYPE agentledger_forward_items_dropped_total counter")
        for signal in Signal:
            n = s[f"dropped_{signal.name.lower()}"]
            lines.append(
                f"agentledger_forward_items_dropped_total"
                f'{{{label},signal="{signal.name.lower()}",reason="refused"}} {n}'
            )
        lines += [
            "# TYPE agentledger_forward_batches_dropped_total counter",
            f'agentledger_forward_batches_dropped_total{{{label},reason="queue_full"}} '
            f"{s['dropped_queue_full']}",
            f'agentledger_forward_batches_dropped_total{{{label},reason="too_large"}} '
            f"{s['dropped_too_large']}",
            "# TYPE agentledger_forward_send_failures_total counter",
            f"agentledger_forward_send_failures_total{{{label}}} {s['send_failures']}",
        ]
        return lines
