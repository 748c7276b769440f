"""Tests for `collector/extensions.py` and the Collector-shaped parts of the config: extensions
(health_check served, the rest inert with a notice), `service.extensions`, the metrics telemetry
address, and the batch / memory_limiter processors read as commit and admission settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from collector import registry
from collector.config import load_config, parse_config
from collector.extensions import HealthCheckConfig
from collector.pipeline import MIB, MemoryLimiterConfig
from collector.store.config import BatchConfig
from collector.store.lake import StoreSettings
from tests.collector.confighelp import REPO, messages


def test_a_config_from_the_collectors_otlp_receiver_docs_loads_unchanged() -> None:
    config = load_config(REPO / "tests" / "fixtures" / "collector" / "otlpreceiver-readme.yaml", {})
    assert registry.validate(config) == []
    http = config.receivers.otlp.protocols.http  # type: ignore[union-attr]
    assert http is not None and http.endpoint == "localhost:4318"
    assert http.cors.exact_origins() == ["http://test.com"]
    assert http.cors.origin_pattern() == r"https://.*\.example\.com"
    assert (http.cors.allowed_headers, http.cors.max_age) == (["Example-Header"], 7200)


COLLECTOR_STYLE = """
extensions:
  health_check:
    endpoint: 0.0.0.0:13133
  pprof:
    endpoint: localhost:1777
  zpages:
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317
      http:
        endpoint: 0.0.0.0:4318
processors:
  memory_limiter:
    check_interval: 1s
    limit_mib: 1000
    spike_limit_mib: 200
  batch:
    timeout: 1s
    send_batch_size: 1024
  normalise: {}
  cost: {}
exporters:
  store: {}
service:
  extensions: [health_check, pprof, zpages]
  telemetry:
    logs:
      level: info
    metrics:
      level: normal
      address: 0.0.0.0:8888
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch, normalise, cost]
      exporters: [store]
"""


def test_collector_extensions_processors_and_telemetry_are_read() -> None:
    config = parse_config(yaml.safe_load(COLLECTOR_STYLE), {})
    assert registry.validate(config) == []
    assert config.health_checks() == {"health_check": HealthCheckConfig(endpoint="0.0.0.0:13133")}
    assert config.notices == [
        "extension 'pprof' does nothing in agentledger (accepted so that Collector configs load)",
        "extension 'zpages' does nothing in agentledger (accepted so that Collector configs load)",
    ]
    assert config.service.telemetry.metrics.listen_address() == "0.0.0.0:8888"
    parts = registry.components(config)
    batch, limiter = registry.ingest_settings(parts)
    assert batch == BatchConfig(timeout="1s", send_batch_size=1024)
    settings = StoreSettings.from_config(config.storage, batch)
    assert (settings.commit_interval_s, settings.commit_max_rows) == (1.0, 1024)
    assert limiter is not None and limiter.queue_bytes(16 * 1024 * MIB) == 800 * MIB
    # Settings, not transforms: the chain the decode workers build holds the real processors.
    chains = registry.processor_factory(parts)()
    kinds = [type(p).__name__ for p in next(iter(chains.values()))]
    assert kinds == ["NormaliseProcessor", "CostProcessor"]


def test_the_collectors_readers_form_of_the_metrics_address() -> None:
    raw = {"service": {"telemetry": {"metrics": {"readers": [
        {"pull": {"exporter": {"prometheus": {"host": "0.0.0.0", "port": 9464}}}}
    ]}}}}  # fmt: skip
    assert parse_config(raw, {}).service.telemetry.metrics.listen_address() == "0.0.0.0:9464"
    bad = {"service": {"telemetry": {"metrics": {"readers": [{"periodic": {}}]}}}}
    assert messages(bad) == {
        "service.telemetry.metrics.readers[0]": "only a pull reader with a prometheus exporter "
        "is supported here"
    }


def test_extension_mistakes_are_errors_with_their_path() -> None:
    assert messages({"extensions": {"helth_check": {}}}) == {
        "extensions.helth_check": "unknown extension 'helth_check'; did you mean 'health_check'?"
    }
    assert messages({"service": {"extensions": ["health_check"]}}) == {
        "service.extensions[0]": "extension 'health_check' is not declared in extensions"
    }
    assert messages({"extensions": {"health_check": {"path": "health", "bogus": 1}}}) == {
        "extensions.health_check.path": "must start with '/', got 'health'",
        "extensions.health_check.bogus": "unknown key (expected one of: endpoint, path, "
        "response_body, check_collector_pipeline)",
    }
    both = {
        "extensions": {"health_check": {"endpoint": "127.0.0.1:7000"}},
        "service": {"extensions": ["health_check"]},
        "api": {"endpoint": "127.0.0.1:7000"},
    }
    assert messages(both) == {
        "extensions.health_check.endpoint": "127.0.0.1:7000 is already the address of api.endpoint"
    }


def test_an_unlisted_health_check_is_declared_but_not_served() -> None:
    config = parse_config({"extensions": {"health_check": {}}}, {})
    assert config.health_checks() == {}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"timeout": "soon"}, "expected a duration like 200ms, 5s or 1m30s, got 'soon'"),
        ({"timeout": "30s"}, "must be between 1ms and 10s, got 30s"),
    ],
)
def test_batch_timeouts_are_durations_within_the_commit_bounds(
    settings: dict[str, object], message: str
) -> None:
    raw = {"processors": {"normalise": {}, "cost": {}, "batch": settings}}
    assert registry.validate(parse_config(raw, {}))[0].message == message


def test_memory_limiter_needs_a_limit_and_a_smaller_spike(tmp_path: Path) -> None:
    def problems(**kw: object) -> list[str]:
        raw = {"processors": {"normalise": {}, "cost": {}, "memory_limiter": kw}}
        return [i.message for i in registry.validate(parse_config(raw, {}))]

    assert problems(check_interval="1s") == ["set limit_mib or limit_percentage"]
    assert problems(check_interval="1s", limit_mib=100, spike_limit_mib=100) == [
        "must be below limit_mib"
    ]
    assert problems(check_interval="often", limit_mib=100) == [
        "expected a duration like 200ms, 5s or 1m30s, got 'often'"
    ]
    by_share = MemoryLimiterConfig(limit_percentage=50, spike_limit_percentage=10)
    assert by_share.queue_bytes(1000 * MIB) == 400 * MIB
    assert MemoryLimiterConfig(limit_mib=100).queue_bytes(0) == 80 * MIB  # spike: 20%
