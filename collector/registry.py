"""The registry: YAML component names → processor and exporter classes and their configs.

The only importer of `processors/` and `exporters/`. It type-checks each component section of
the config with the component's own dataclass and builds processor chains and exporters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collector.config import Config, component_type
from collector.configparse import ConfigError, ConfigIssue, parse_dataclass
from collector.derive import RunDeriver
from collector.follow import RunConsumer
from collector.model import Exporter, Processor, Signal
from collector.pipeline import ProcessorFactory
from collector.pricebook import PriceBook, load_price_book
from collector.store import Store
from exporters.memory import MemoryExporter, MemoryExporterConfig
from exporters.store import StoreExporter, StoreExporterConfig
from processors.cost import CostConfig, CostProcessor
from processors.normalise import NormaliseConfig, NormaliseProcessor
from processors.runs import RunsConfig, RunsProcessor


@dataclass(frozen=True)
class Resources:
    """Reference data components may need, loaded once by the registry."""

    price_book: PriceBook


ProcessorBuilder = Callable[[Any, Resources], Processor]
ExporterBuilder = Callable[[Any, Store], Exporter]

PROCESSORS: dict[str, tuple[type, ProcessorBuilder]] = {
    "normalise": (NormaliseConfig, lambda cfg, _res: NormaliseProcessor(cfg)),
    "cost": (CostConfig, lambda cfg, res: CostProcessor(cfg, res.price_book)),
}
# Processors of committed data (derived processing), not of ingest batches: declared under
# `processors:` like the others, but never listed in a pipeline.
DERIVED: dict[str, tuple[type, Any]] = {
    "runs": (RunsConfig, RunsProcessor),
}
EXPORTERS: dict[str, tuple[type, ExporterBuilder]] = {
    "store": (StoreExporterConfig, StoreExporter),
    "memory": (MemoryExporterConfig, lambda cfg, store: MemoryExporter(cfg)),
}
SIGNALS = {"traces": Signal.TRACES, "logs": Signal.LOGS, "metrics": Signal.METRICS}


@dataclass(frozen=True)
class Components:
    """Typed settings of every declared component, and which ones each signal runs."""

    processors: dict[str, Any]
    exporters: dict[str, Any]
    chains: dict[Signal, tuple[str, ...]]
    outputs: dict[Signal, tuple[str, ...]]


def components(config: Config) -> Components:
    """Type-check the component sections; ConfigError with every problem found."""
    issues: list[ConfigIssue] = []
    procs = _typed(config.processors, {**PROCESSORS, **DERIVED}, "processors", issues)
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
    if not issues:
        issues += _construction_issues(procs)
    if issues:
        raise ConfigError(issues)
    return Components(procs, exps, chains, outputs)


def _construction_issues(procs: dict[str, Any]) -> list[ConfigIssue]:
    """Build each processor once here, so a bad price override fails `validate`, not a worker."""
    resources = Resources(price_book=load_price_book())
    issues = []
    for cid, cfg in procs.items():
        if component_type(cid) in DERIVED:
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
        signal: tuple((component_type(cid), parts.processors[cid]) for cid in ids)
        for signal, ids in parts.chains.items()
    }
    return functools.partial(_build_chains, spec)


def _build_chains(spec: dict[Signal, tuple[tuple[str, Any], ...]]) -> dict[Signal, list[Processor]]:
    resources = Resources(price_book=load_price_book())
    return {
        signal: [PROCESSORS[kind][1](cfg, resources) for kind, cfg in chain]
        for signal, chain in spec.items()
    }


def build_deriver(
    parts: Components, store: Store, offload: Callable[..., Any] | None = None
) -> RunDeriver:
    """The run deriver, with the declared `runs:` settings or the defaults; `offload` runs its
    assembly elsewhere (the decode pool's processes)."""
    config = next(
        (cfg for cid, cfg in parts.processors.items() if component_type(cid) == "runs"),
        RunsConfig(),
    )
    if offload is None:
        return RunDeriver(store, RunsProcessor(config))
    return RunDeriver(store, RunsProcessor(config), offload=offload)


def build_run_consumers(config: Config, parts: Components, store: Store) -> list[RunConsumer]:
    """The features fed by finished runs (alerts, ROI of traced runs, output rules on runs),
    each behind its own watermark; see `collector/follow.py`."""
    consumers: list[RunConsumer] = []
    return consumers


def build_processor(parts: Components, kind: str) -> Processor | None:
    """The first declared processor of type `kind`, built here (for offline jobs: re-pricing)."""
    for cid, cfg in parts.processors.items():
        if component_type(cid) == kind:
            return PROCESSORS[kind][1](cfg, Resources(price_book=load_price_book()))
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
