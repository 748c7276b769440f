"""The registry's checks of component sections: typed settings, derived processors, pipelines."""

from __future__ import annotations

import pytest

from collector import registry
from collector.config import parse_config
from collector.configparse import ConfigError
from processors.runs.assemble import RunsConfig


def _issues(yaml_data: dict[str, object]) -> list[str]:
    try:
        config = parse_config(yaml_data, {})
    except ConfigError as e:
        return [str(i) for i in e.issues]
    return [str(i) for i in registry.validate(config)]


def test_defaults_are_valid_and_runs_use_default_settings() -> None:
    parts = registry.components(parse_config({}, {}))
    assert registry.validate(parse_config({}, {})) == []
    assert "runs" not in parts.processors
    assert registry.build_processor(parts, "cost") is not None


def test_runs_settings_are_typed_and_checked() -> None:
    procs = {"normalise": {}, "cost": {}, "runs": {"loop_threshold": 3, "interval_ms": 250}}
    parts = registry.components(parse_config({"processors": procs}, {}))
    assert parts.processors["runs"] == RunsConfig(loop_threshold=3, interval_ms=250)
    procs["runs"] = {"loop_threshold": 1}
    assert _issues({"processors": procs}) == [
        "processors.runs: loop_threshold: must be at least 2, got 1"
    ]


def test_a_derived_processor_cannot_sit_in_a_pipeline() -> None:
    issues = _issues(
        {
            "processors": {"normalise": {}, "runs": {}},
            "service": {
                "pipelines": {
                    "traces": {
                        "receivers": ["otlp"],
                        "processors": ["runs"],
                        "exporters": ["store"],
                    }
                }
            },
        }
    )
    assert len(issues) == 1 and issues[0].startswith("service.pipelines.traces.processors[0]")


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"processors": {"normalise": {}, "cost": {}, "normalize": {}}},
            "processors.normalize: unknown processor type",
        ),
        ({"exporters": {"store": {}, "kafka": {}}}, "exporters.kafka: unknown exporter type"),
        (
            {"processors": {"normalise": {"excerpt_chars": "long"}, "cost": {}}},
            "processors.normalise.excerpt_chars",
        ),
    ],
)
def test_bad_component_sections(section: dict[str, object], expected: str) -> None:
    issues = _issues(section)
    assert any(i.startswith(expected) for i in issues), issues
