"""The vocabulary of agentledger: batch types and the Processor / Exporter protocols.

Receivers decode requests into `Batch`es, processors transform them, the pipeline turns them into
`Rows` (Arrow tables in store columns) and exporters write those out. Imports nothing else of ours.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

import pyarrow as pa

Scope = Literal["ingest", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "admin")

# API keys: al_<kind>_<8 hex key id>_<40 hex secret>; the kind names the scope.
KEY_PATTERN = re.compile(r"al_(live|read|admin)_([0-9a-f]{8})_([0-9a-f]{40})")
SCOPE_OF_KIND: dict[str, Scope] = {"live": "ingest", "read": "read", "admin": "admin"}
KIND_OF_SCOPE: dict[Scope, str] = {scope: kind for kind, scope in SCOPE_OF_KIND.items()}


class Signal(StrEnum):
    """The three OTLP signals; the value is also the store table that holds them."""

    TRACES = "spans"
    LOGS = "logs"
    METRICS = "metrics"


@dataclass(frozen=True)
class Principal:
    """Who sent a request: the key's org, its id (never the secret) and its scope."""

    org: str
    key_id: str
    scope: Scope


Counters = dict[tuple[str, str, str], int]
"""Counts processors report: (metric name, label name, label value) → increment."""


@dataclass
class Batch:
    """Decoded items of one signal and one org, in store columns, before processing.

    `columns` maps a store column to one value per item. `attributes` and `resources` are the
    parsed attribute maps of each item (already serialised as JSON in `columns` as well); they are
    here so processors read attributes without parsing JSON again. `events` holds each span's
    parsed events (empty lists for logs and metrics).
    """

    signal: Signal
    org: str
    columns: dict[str, list[Any]]
    attributes: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    events: list[list[dict[str, Any]]] = field(default_factory=list)
    rejected: int = 0
    """Items the decoder refused (e.g. a span with no valid id), reported as partial success."""
    counters: Counters = field(default_factory=dict)
    """What processors count for /metrics (e.g. redactions per rule); the pipeline adds them."""

    def __len__(self) -> int:
        return len(self.attributes)

    def set_column(self, name: str, values: list[Any]) -> None:
        if len(values) != len(self):
            raise ValueError(f"column {name}: {len(values)} values for {len(self)} items")
        self.columns[name] = values

    def select(self, keep: list[int]) -> Batch:
        """A batch of only the items at `keep` (in that order), e.g. to drop placeholders."""
        if len(keep) == len(self):
            return self
        return Batch(
            signal=self.signal,
            org=self.org,
            columns={k: [v[i] for i in keep] for k, v in self.columns.items()},
            attributes=[self.attributes[i] for i in keep],
            resources=[self.resources[i] for i in keep],
            events=[self.events[i] for i in keep] if self.events else [],
            rejected=self.rejected,
            counters=self.counters,
        )


@dataclass(frozen=True)
class Rows:
    """Processed items as an Arrow table in the store's schema for `signal`, or, for records of
    the native JSON APIs (signal None), for the store table named `target`."""

    signal: Signal | None
    org: str
    table: pa.Table
    rejected: int = 0
    target: str | None = None
    counters: Counters = field(default_factory=dict)
    rejection_message: str = ""
    """Why the `rejected` items were refused, for the partial-success answer."""

    @property
    def table_name(self) -> str:
        if self.target:
            return self.target
        if self.signal is None:
            raise ValueError("rows need a signal or a target table")
        return self.signal.value

    @property
    def count(self) -> int:
        return int(self.table.num_rows)


@dataclass(frozen=True)
class Accepted:
    """What the pipeline tells a receiver after a commit: how many items were stored new,
    how many were already stored (a retry), and how many were rejected, with why."""

    accepted: int
    duplicates: int = 0
    rejected: int = 0
    rejection_message: str = ""


class Processor(Protocol):
    """A pure transform over one batch: no I/O, never calls the next stage."""

    def process(self, batch: Batch) -> Batch: ...


class Exporter(Protocol):
    """A destination for processed rows. `export` returns once the rows are durable there."""

    async def start(self) -> None: ...

    async def export(self, rows: Rows) -> Accepted: ...

    async def shutdown(self) -> None: ...


@dataclass(frozen=True)
class IngestRequest:
    """One OTLP export request as a receiver hands it on: already authenticated, decompressed
    and size-checked. `encoding` is "protobuf" or "json"; `transport` is "grpc" or "http"."""

    principal: Principal
    signal: Signal
    payload: bytes
    encoding: str
    transport: str


Consume = Callable[[IngestRequest], Awaitable[Accepted]]
"""What a receiver is handed: a request in, the committed result out (or a PipelineError)."""


class PipelineError(Exception):
    """Errors the pipeline reports to receivers; mapped to protocol codes in one place."""


class MalformedPayload(PipelineError):
    """The payload could not be decoded: not retryable (HTTP 400, gRPC INVALID_ARGUMENT)."""


class Overloaded(PipelineError):
    """The bounded queue is full: retryable (HTTP 503 + Retry-After, gRPC UNAVAILABLE)."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooLarge(PipelineError):
    """The request needs more than a bound allows even alone (memory to decode it, rows once
    decoded): not retryable (HTTP 413, gRPC RESOURCE_EXHAUSTED without RetryInfo)."""


class StoreUnavailable(PipelineError):
    """The commit failed or the service is draining: retryable, nothing was acknowledged."""
