"""agentledger's configuration: the top-level schema, its cross-checks, and `load_config`.

YAML comes from `--config` (or the embedded `config/default.yaml`) plus the environment mapping the
CLI passes in; the frozen `Config` goes to the service, and `processors:` / `exporters:` sections go
on to the registry, which parses each with its component's own dataclass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from collector.alerts.config import AlertsConfig
from collector.api.server import ApiConfig
from collector.auth import settings as org_settings
from collector.auth.config import AuthConfig
from collector.cluster.config import ClusterConfig, cluster_issues
from collector.configenv import expand_env, load_yaml
from collector.configparse import (
    INVALID,
    ConfigError,
    ConfigIssue,
    describe,
    endpoint_issues,
    join,
    parse_dataclass,
    split_endpoint,
    suggest,
)
from collector.evals.config import EvalsConfig
from collector.evals.judge import JudgeConfig
from collector.extensions import ExtensionsConfig, HealthCheckConfig, parse_extensions
from collector.governance.compaction import CompactionConfig
from collector.governance.retention import RetentionConfig
from collector.mcp.config import McpConfig
from collector.outbound.config import NotificationsConfig, OutboundPolicy
from collector.pipeline import LimitsConfig
from collector.prices.feed import PricesConfig
from collector.read.compare import SETTINGS as COMPARE_SETTINGS
from collector.receivers.config import OtlpProtocols, OtlpReceiverConfig, ReceiversConfig
from collector.resources import PACKAGE, shipped_text
from collector.roi.config import RoiConfig
from collector.roi.settings import settings_group as roi_settings
from collector.roi.tasktypes import Catalogue, load_catalogue
from collector.secretbox import SecretsConfig
from collector.store.config import StorageConfig
from collector.ui.config import UiConfig

_COMPONENT_ID = re.compile(r"[a-z][a-z0-9_]*(?:/[A-Za-z0-9_.\-]+)?")
_PIPELINE = re.compile(r"(?:traces|logs|metrics)(?:/[A-Za-z0-9_.\-]+)?")


def component_type(component_id: str) -> str:
    """`otlp/forward` → `otlp`: the registry's type name (also a pipeline id's signal)."""
    return component_id.split("/", 1)[0]


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    receivers: list[str]
    processors: list[str] = field(default_factory=list)
    exporters: list[str]

    def validate(self) -> list[ConfigIssue]:
        issues = [
            ConfigIssue(kind, f"a pipeline needs at least one of its {kind}")
            for kind, ids in (("receivers", self.receivers), ("exporters", self.exporters))
            if not ids
        ]
        for kind, ids in (
            ("receivers", self.receivers),
            ("processors", self.processors),
            ("exporters", self.exporters),
        ):
            issues += [
                ConfigIssue(f"{kind}[{i}]", f"{x!r} is listed twice")
                for i, x in enumerate(ids)
                if x in ids[:i]
            ]
        return issues


def _default_pipelines() -> dict[str, PipelineConfig]:
    def store_only() -> PipelineConfig:
        return PipelineConfig(receivers=["otlp"], exporters=["store"])

    traces = PipelineConfig(
        receivers=["otlp"], processors=["normalise", "cost"], exporters=["store"]
    )
    return {"traces": traces, "logs": store_only(), "metrics": store_only()}


@dataclass(frozen=True, kw_only=True)
class LogsConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True, kw_only=True)
class MetricsTelemetryConfig:
    """`service.telemetry.metrics` as in the Collector: `level: none` serves no /metrics; any
    other level serves all of them (agentledger has one set). `address` (host:port) serves
    /metrics on a listener of its own instead of the HTTP listeners, like the Collector's :8888;
    the Collector's newer `readers: [{pull: {exporter: {prometheus: {host, port}}}}]` form is
    read as that address."""

    level: Literal["none", "basic", "normal", "detailed"] = "normal"
    address: str | None = None
    readers: list[dict[str, Any]] = field(default_factory=list)

    def listen_address(self) -> str | None:
        if self.address is not None:
            return self.address
        for reader in self.readers:
            prom = _prometheus_reader(reader)
            if prom is not None:
                return f"{prom.get('host', '127.0.0.1')}:{prom.get('port', 8888)}"
        return None

    def validate(self) -> list[ConfigIssue]:
        issues: list[ConfigIssue] = []
        for i, reader in enumerate(self.readers):
            if _prometheus_reader(reader) is None:
                message = "only a pull reader with a prometheus exporter is supported here"
                issues.append(ConfigIssue(f"readers[{i}]", message))
        if self.address is not None and self.readers:
            issues.append(ConfigIssue("address", "give address or readers, not both"))
        if len(self.readers) > 1:
            issues.append(ConfigIssue("readers", "one prometheus reader at most"))
        address = self.listen_address()
        if not issues and address is not None:
            where = "address" if self.address is not None else "readers[0]"
            issues += [ConfigIssue(where, i.message) for i in endpoint_issues("", address)]
        return issues


def _prometheus_reader(reader: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        prom = reader["pull"]["exporter"]["prometheus"]
    except (KeyError, TypeError):
        return None
    return prom if isinstance(prom, dict) else {}


@dataclass(frozen=True, kw_only=True)
class TelemetryConfig:
    logs: LogsConfig = field(default_factory=LogsConfig)
    metrics: MetricsTelemetryConfig = field(default_factory=MetricsTelemetryConfig)


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    pipelines: dict[str, PipelineConfig] = field(default_factory=_default_pipelines)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    extensions: list[str] = field(default_factory=list)
    """The declared extensions to start, as in the Collector (collector/extensions.py)."""

    def validate(self) -> list[ConfigIssue]:
        return [
            ConfigIssue(
                f"pipelines.{name}",
                "a pipeline id is traces, logs or metrics, optionally with /name (e.g. traces/eu)",
            )
            for name in self.pipelines
            if not _PIPELINE.fullmatch(name)
        ]


def _parse_components(raw: object, path: str, errors: list[ConfigIssue]) -> object:
    """`processors:` / `exporters:`: id → raw settings, left for the registry to type-check.

    A section present but empty (`processors:`) declares no components, unlike an absent one."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errors.append(
            ConfigIssue(path, f"expected a mapping of component ids, got {describe(raw)}")
        )
        return INVALID
    components: dict[str, dict[str, object]] = {}
    for cid, settings in raw.items():
        if not isinstance(cid, str) or not _COMPONENT_ID.fullmatch(cid):
            message = "invalid component id (expected type or type/name, e.g. otlp/forward)"
            errors.append(ConfigIssue(join(path, str(cid)), message))
            continue
        if settings is not None and not isinstance(settings, dict):
            message = f"expected a mapping of settings, got {describe(settings)}"
            errors.append(ConfigIssue(join(path, cid), message))
        # Declared even when its settings are bad, so pipelines naming it raise no second error.
        components[cid] = dict(settings) if isinstance(settings, dict) else {}
    return components


@dataclass(frozen=True, kw_only=True)
class Config:
    receivers: ReceiversConfig = field(
        default_factory=lambda: ReceiversConfig(otlp=OtlpReceiverConfig())
    )
    # Without a section in the file these defaults apply; a section replaces them whole.
    processors: dict[str, dict[str, object]] = field(
        default_factory=lambda: {"normalise": {}, "cost": {}},
        metadata={"parser": _parse_components},
    )
    exporters: dict[str, dict[str, object]] = field(
        default_factory=lambda: {"store": {}}, metadata={"parser": _parse_components}
    )
    extensions: ExtensionsConfig = field(
        default_factory=ExtensionsConfig, metadata={"parser": parse_extensions}
    )
    service: ServiceConfig = field(default_factory=ServiceConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # collector/cluster/config.py
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    mcp: McpConfig = field(default_factory=McpConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    compaction: CompactionConfig = field(default_factory=CompactionConfig)
    prices: PricesConfig = field(default_factory=PricesConfig)
    roi: RoiConfig = field(default_factory=RoiConfig)
    # Outbound requests (collector/outbound/client.py), email, the LLM judge, secrets at rest.
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    secrets: SecretsConfig = field(default_factory=SecretsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)  # collector/alerts/config.py
    evals: EvalsConfig = field(default_factory=EvalsConfig)  # collector/evals/config.py
    ui: UiConfig = field(default_factory=UiConfig)  # collector/ui/config.py
    notices: list[str] = field(default_factory=list, init=False, compare=False)
    """What the loader wants the operator to know (deprecated keys), logged at start."""

    def validate(self) -> list[ConfigIssue]:
        return (
            self._pipeline_issues()
            + self._extension_issues()
            + self._listener_issues()
            + cluster_issues(self.storage, self.secrets.key)
            + self._org_settings_issues()
        )

    def org_settings(
        self, groups: list[org_settings.SettingsGroup]
    ) -> dict[str, dict[str, object]]:
        """Each declared org's settings as the file gives them (typed, and checked at load)."""
        return {
            org.name: org_settings.from_config(org.settings, groups)[0]
            for org in self.auth.orgs
            if org.settings
        }

    def _org_settings_issues(self) -> list[ConfigIssue]:
        if not any(org.settings for org in self.auth.orgs):
            return []
        groups = org_settings_groups()
        issues = []
        for i, org in enumerate(self.auth.orgs):
            _, problems = org_settings.from_config(org.settings, groups)
            where = f"auth.orgs[{i}].settings"
            issues += [ConfigIssue(f"{where}.{p['field']}", p["message"]) for p in problems]
        return issues

    def _extension_issues(self) -> list[ConfigIssue]:
        issues = []
        for i, eid in enumerate(self.service.extensions):
            if eid not in self.extensions:
                declared = [*self.extensions.health_checks, *self.extensions.inert]
                hint = suggest(eid, declared)
                message = f"extension {eid!r} is not declared in extensions" + (
                    f"; did you mean {hint!r}?" if hint else ""
                )
                issues.append(ConfigIssue(f"service.extensions[{i}]", message))
        return issues

    def health_checks(self) -> dict[str, HealthCheckConfig]:
        """The health_check extensions to serve: those `service.extensions` lists."""
        checks = self.extensions.health_checks
        return {eid: checks[eid] for eid in self.service.extensions if eid in checks}

    def _pipeline_issues(self) -> list[ConfigIssue]:
        receivers = ["otlp"] if self.receivers.otlp is not None else []
        issues: list[ConfigIssue] = []
        for name, pipeline in self.service.pipelines.items():
            for kind, declared, ids in (
                ("receiver", receivers, pipeline.receivers),
                ("processor", list(self.processors), pipeline.processors),
                ("exporter", list(self.exporters), pipeline.exporters),
            ):
                for i, cid in enumerate(ids):
                    if cid in declared:
                        continue
                    hint = suggest(cid, declared)
                    message = (
                        f"{kind} {cid!r} is not declared in {kind}s "
                        f"(declared: {', '.join(declared) or 'none'}"
                        + (f"; did you mean {hint!r}?)" if hint else ")")
                    )
                    issues.append(ConfigIssue(f"service.pipelines.{name}.{kind}s[{i}]", message))
        return issues

    def _listener_issues(self) -> list[ConfigIssue]:
        otlp = self.receivers.otlp.protocols if self.receivers.otlp else OtlpProtocols()
        listeners = {
            "receivers.otlp.protocols.grpc.endpoint": otlp.grpc.endpoint if otlp.grpc else None,
            "receivers.otlp.protocols.http.endpoint": otlp.http.endpoint if otlp.http else None,
            "api.endpoint": self.api.endpoint,
            "service.telemetry.metrics.address": self.service.telemetry.metrics.listen_address(),
        }
        for eid, check in self.health_checks().items():
            listeners[f"extensions.{eid}.endpoint"] = check.endpoint
        issues: list[ConfigIssue] = []
        taken: dict[tuple[str, int], str] = {}
        for path, endpoint in listeners.items():
            try:
                host, port = split_endpoint(endpoint) if endpoint else ("", 0)
            except ValueError:
                continue  # reported by the section's own validate()
            address = (host.lower(), port)
            if port != 0 and address in taken:  # port 0: each listener picks its own free port
                message = f"{endpoint} is already the address of {taken[address]}"
                issues.append(ConfigIssue(path, message))
            taken.setdefault(address, path)
        return issues


def org_settings_groups(catalogue: Catalogue | None = None) -> list[org_settings.SettingsGroup]:
    """Every per-org setting, by the feature that owns it: the one list that checks
    `auth.orgs[].settings` at load and that `/api/org-settings` serves (docs/org-settings.md)."""
    return [roi_settings(catalogue or load_catalogue()), COMPARE_SETTINGS]


@dataclass(frozen=True)
class ConfigOverrides:
    """Command-line settings that win over the file: `--data-dir` replaces `storage.path`."""

    data_dir: Path | None = None


def parse_config(
    raw: object, env: Mapping[str, str], overrides: ConfigOverrides | None = None
) -> Config:
    """Already-loaded YAML data → Config, or ConfigError listing every problem."""
    errors: list[ConfigIssue] = []
    expanded = expand_env(raw, env, "", errors)
    env_failed = {issue.path for issue in errors}
    notices = _renamed_sections(expanded, errors)
    parse_errors: list[ConfigIssue] = []
    config = parse_dataclass(Config, expanded, "", parse_errors)
    config.notices.extend(notices)
    config.notices.extend(
        f"extension {eid!r} does nothing in agentledger (accepted so that Collector configs load)"
        for eid in config.extensions.inert
    )
    # A value whose variable is unset was read as "", so its own checks would only repeat that.
    errors += [issue for issue in parse_errors if issue.path not in env_failed]
    if errors:
        raise ConfigError(errors)
    if overrides is not None and overrides.data_dir is not None:
        config = replace(config, storage=replace(config.storage, path=str(overrides.data_dir)))
    return config


# Sections renamed so that the YAML key, the package and the config class share one name.
RENAMED = {"logs": "evals"}


def _renamed_sections(raw: object, errors: list[ConfigIssue]) -> list[str]:
    """Read a renamed section under its new name (in place), with a notice; both is an error."""
    notices: list[str] = []
    if not isinstance(raw, dict):
        return notices
    for old, new in RENAMED.items():
        if old not in raw:
            continue
        if new in raw:
            message = f"renamed to `{new}:`, which is also set; keep only `{new}:`"
            errors.append(ConfigIssue(old, message))
            del raw[old]  # reported here, not again as an unknown key
            continue
        raw[new] = raw.pop(old)
        notices.append(f"the `{old}:` section is deprecated: rename it to `{new}:`")
    return notices


def load_config(
    path: Path | None, env: Mapping[str, str], overrides: ConfigOverrides | None = None
) -> Config:
    """Read a YAML file (None: the embedded default) → Config, or ConfigError.

    `env` is the only source of `${env:…}` values; the CLI passes `os.environ`.
    """
    if path is None:
        text, source = _default_text()
    else:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise ConfigError(
                [ConfigIssue(source, f"cannot read the config file: {reason}")]
            ) from None
    return parse_config(load_yaml(text, source), env, overrides)


def _default_text() -> tuple[str, str]:
    try:
        return shipped_text("default.yaml"), f"{PACKAGE}/default.yaml"
    except (ImportError, OSError):
        message = "the built-in default config is missing from this installation; pass --config"
        raise ConfigError([ConfigIssue("default.yaml", message)]) from None
