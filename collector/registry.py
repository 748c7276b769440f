"""The registry: YAML component names → processor, exporter and channel classes and their configs.

It type-checks each component section of the config with the component's own dataclass and
hands out parts (processor chains, exporters, notification channels); `service.py` wires them
into features. The only importer of `exporters/`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.alerts.config import declared_rules
from collector.chains import PROCESSORS, Resources, build_chains
from collector.config import Config, component_type
from collector.configparse import ConfigError, ConfigIssue, parse_dataclass
from collector.model import Exporter, Processor, Signal
from collector.outbound.config import OutboundPolicy
from collector.outbound.notify import (
    Channel,
    Notification,
    SmtpSettings,
    channel_from_spec,
    check_channel,
)
from collector.pipeline import MemoryLimiterConfig, ProcessorFactory
from collector.prices.feed import BookSource, book_source
from collector.prices.layers import stack
from collector.store.config import BatchConfig
from collector.store.writer import Store
from exporters.memory import MemoryExporter, MemoryExporterConfig
from exporters.otlp.forward import OtlpExporter, OtlpExporterConfig, OtlpHttpExporterConfig
from exporters.store import StoreExporter, StoreExporterConfig
from processors.redact.processor import RedactConfig, Redactor
from processors.runs.assemble import RunsConfig, RunsProcessor

ExporterBuilder = Callable[[Any, Store], Exporter]

# Processors of committed data (derived processing), not of ingest batches: declared under
# `processors:` like the others, but never listed in a pipeline.
# The Collector's batch and memory_limiter, listed in pipelines like any processor: they set the
# group commit and the admission bound instead of transforming batches (ingest_settings).
SETTINGS: dict[str, tuple[type, Any]] = {
    "batch": (BatchConfig, None),
    "memory_limiter": (MemoryLimiterConfig, None),
}
DERIVED: dict[str, tuple[type, Any]] = {
    "runs": (RunsConfig, RunsProcessor),
}
EXPORTERS: dict[str, tuple[type, ExporterBuilder]] = {
    "store": (StoreExporterConfig, StoreExporter),
    "memory": (MemoryExporterConfig, lambda cfg, store: MemoryExporter(cfg)),
    "otlp": (OtlpExporterConfig, lambda cfg, store: OtlpExporter("otlp", cfg, store)),
    "otlphttp": (OtlpHttpExporterConfig, lambda cfg, store: OtlpExporter("otlphttp", cfg, store)),
}
SIGNALS = {"traces": Signal.TRACES, "logs": Signal.LOGS, "metrics": Signal.METRICS}


@dataclass(frozen=True)
class Components:
    """Typed settings of every declared component, and which ones each signal runs."""

    processors: dict[str, Any]
    exporters: dict[str, Any]
    chains: dict[Signal, tuple[str, ...]]
    outputs: dict[Signal, tuple[str, ...]]
    prices: BookSource = field(default_factory=BookSource)
    """Where the current price book is read from (`prices:`), in this process and workers."""


def components(config: Config) -> Components:
    """Type-check the component sections; ConfigError with every problem found."""
    issues: list[ConfigIssue] = []
    procs = _typed(config.processors, {**PROCESSORS, **SETTINGS, **DERIVED}, "processors", issues)
    exps = _typed(config.exporters, EXPORTERS, "exporters", issues)
    chains: dict[Signal, tuple[str, ...]] = {}
    outputs: dict[Signal, tuple[str, ...]] = {}
    for name, pipeline in config.service.pipelines.items():
        signal = SIGNALS[component_type(name)]
        if signal in chains:
            issues.append(
                ConfigIssue(
                    f"service.pipelines.{name}",
                    f"only one {component_type(name)} pipeline is supported",
                )
            )
            continue
        for i, cid in enumerate(pipeline.processors):
            if component_type(cid) in DERIVED:
                issues.append(
                    ConfigIssue(
                        f"service.pipelines.{name}.processors[{i}]",
                        f"{cid!r} works on committed data; declare it under processors: only",
                    )
                )
        chains[signal] = tuple(pipeline.processors)
        outputs[signal] = tuple(pipeline.exporters)
        stores = [e for e in pipeline.exporters if component_type(e) == "store"]
        if pipeline.exporters and component_type(pipeline.exporters[0]) not in ("store", "memory"):
            issues.append(
                ConfigIssue(
                    f"service.pipelines.{name}.exporters",
                    "the first exporter must be `store` (it acknowledges)",
                )
            )
        if len(stores) > 1:
            issues.append(
                ConfigIssue(
                    f"service.pipelines.{name}.exporters", "a pipeline writes to the store once"
                )
            )
    prices = book_source(config.prices, config.storage.path)
    declared_rules(config.alerts, issues, channel_checker(config))  # alerts.rules
    if not issues:
        issues += _construction_issues(procs, prices)
    if issues:
        raise ConfigError(issues)
    return Components(procs, exps, chains, outputs, prices)


def _construction_issues(procs: dict[str, Any], prices: BookSource) -> list[ConfigIssue]:
    """Build each processor once here, so a bad price override fails `validate`, not a worker."""
    try:
        resources = Resources(pricing=stack(prices.load_base()))
    except ValueError as e:
        return [ConfigIssue("prices.path", str(e))]
    issues = []
    for cid, cfg in procs.items():
        if component_type(cid) in DERIVED or component_type(cid) in SETTINGS:
            continue
        try:
            PROCESSORS[component_type(cid)][1](cfg, resources)
        except ValueError as e:
            issues.append(ConfigIssue(f"processors.{cid}", str(e)))
    return issues


def validate(config: Config) -> list[ConfigIssue]:
    try:
        components(config)
    except ConfigError as e:
        return list(e.issues)
    return []


def _typed(
    section: dict[str, dict[str, object]],
    known: dict[str, tuple[type, Any]],
    path: str,
    issues: list[ConfigIssue],
) -> dict[str, Any]:
    typed: dict[str, Any] = {}
    for cid, raw in section.items():
        kind = component_type(cid)
        if kind not in known:
            issues.append(
                ConfigIssue(
                    f"{path}.{cid}",
                    f"unknown {path[:-1]} type {kind!r} (known: {', '.join(known)})",
                )
            )
            continue
        typed[cid] = parse_dataclass(known[kind][0], raw, f"{path}.{cid}", issues)
    return typed


def processor_factory(parts: Components) -> ProcessorFactory:
    """A picklable builder of every signal's processor chain (run in each decode worker)."""
    spec = {
        signal: tuple(
            (component_type(cid), parts.processors[cid])
            for cid in ids
            if component_type(cid) not in SETTINGS
        )
        for signal, ids in parts.chains.items()
    }
    return functools.partial(build_chains, spec, parts.prices)


def ingest_settings(parts: Components) -> tuple[BatchConfig | None, MemoryLimiterConfig | None]:
    """The `batch` and `memory_limiter` processors some pipeline lists (the first of each), which
    set the group commit and the admission bound of the whole service."""
    listed = [cid for chain in parts.chains.values() for cid in chain]
    batch = next((parts.processors[c] for c in listed if component_type(c) == "batch"), None)
    limiter = next(
        (parts.processors[c] for c in listed if component_type(c) == "memory_limiter"), None
    )
    return batch, limiter


def runs_config(parts: Components) -> RunsConfig:
    """The declared `processors.runs` settings, or the defaults (derivation is always on)."""
    return next(
        (cfg for cid, cfg in parts.processors.items() if component_type(cid) == "runs"),
        RunsConfig(),
    )


def build_processor(parts: Components, kind: str) -> Processor | None:
    """The first declared processor of type `kind`, built here (offline jobs: re-pricing; the
    service's /v1/track pricing), with the current prices."""
    for cid, cfg in parts.processors.items():
        if component_type(cid) == kind:
            return PROCESSORS[kind][1](cfg, Resources(pricing=parts.prices.pricing()))
    return None


def build_redactor(
    config: Config, on_redact: Callable[[str, int], None] | None = None
) -> Redactor | None:
    """The first declared `redact:` processor's rules for the native payloads (ROI audit
    samples, MCP args/results), reporting each redaction to `on_redact`; None if none."""
    for cid, raw in config.processors.items():
        if component_type(cid) == "redact":
            issues: list[ConfigIssue] = []
            cfg = parse_dataclass(RedactConfig, raw, f"processors.{cid}", issues)
            if issues:
                raise ConfigError(issues)
            return Redactor(cfg, on_redact)
    return None


def build_exporters(
    parts: Components, store: Store
) -> tuple[dict[str, Exporter], dict[Signal, list[Exporter]]]:
    """Each declared exporter once, and the list each signal sends to (durable one first)."""
    built = {
        cid: EXPORTERS[component_type(cid)][1](cfg, store) for cid, cfg in parts.exporters.items()
    }
    by_signal = {signal: [built[cid] for cid in ids] for signal, ids in parts.outputs.items()}
    return built, by_signal


def notification_sender(config: Config) -> Callable[[Mapping[str, Any], Mapping[str, Any]], Any]:
    """`send(channel_spec, note)`: delivers one notification through the channel the spec names
    (`collector/outbound/notify.py`), with the config's SMTP server and outbound policy."""
    smtp, policy = config.notifications.smtp, config.outbound

    async def send(spec: Mapping[str, Any], note: Mapping[str, Any]) -> None:
        await build_channel(spec, smtp=smtp, policy=policy).send(Notification(**note))

    return send


def channel_checker(config: Config) -> Callable[[Mapping[str, Any]], None]:
    """Checks a channel declared in the config file (ValueError): its shape and its URL's
    syntax and literal address; the operator's hosts are not resolved at load."""

    def check(spec: Mapping[str, Any]) -> None:
        build_channel(spec, smtp=config.notifications.smtp, policy=config.outbound)

    return check


def channel_creation_check(config: Config) -> Callable[[Mapping[str, Any]], Awaitable[None]]:
    """Checks a channel a user gives through the API as it is created (ValueError): the same,
    and its URL's host resolved and judged as a delivery will judge it."""

    async def check(spec: Mapping[str, Any]) -> None:
        await check_channel(spec, smtp=config.notifications.smtp, policy=config.outbound)

    return check


def build_channel(
    spec: Mapping[str, Any], *, smtp: SmtpSettings | None, policy: OutboundPolicy
) -> Channel:
    """A notification channel (`collector/outbound/notify.py`) from `{"type": "slack" | "webhook" |
    "email", ...}`; ValueError with a clear message on a bad spec."""
    return channel_from_spec(spec, smtp=smtp, policy=policy)
