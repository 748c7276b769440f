"""Tests for the config loader (`collector/config.py`): defaults, unknown keys and types,
endpoints, pipelines and components, files and overrides.

Config comes from YAML files in tmp_path, the repo's `config/` files and plain dicts; every
assertion checks the parsed value or the exact issue (path and message) the user would see.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest
import yaml

from collector.config import Config, ConfigOverrides, component_type, load_config, parse_config
from collector.configparse import ConfigError, ConfigIssue, split_endpoint
from collector.receivers.config import (
    GrpcConfig,
    HttpConfig,
    OtlpProtocols,
    OtlpReceiverConfig,
    ReceiversConfig,
)
from tests.collector.confighelp import ADMIN, INGEST, READ, REPO, issues_of, messages, write

# --- defaults ---------------------------------------------------------------------------------


def test_default_file_loads_and_equals_the_dataclass_defaults() -> None:
    config = load_config(None, {})
    assert config == Config()
    otlp = config.receivers.otlp
    assert otlp is not None
    assert otlp.protocols.grpc is not None and otlp.protocols.grpc.endpoint == "127.0.0.1:4317"
    assert otlp.protocols.http is not None and otlp.protocols.http.endpoint == "127.0.0.1:4318"
    assert config.service.pipelines["traces"].processors == ["normalise", "cost"]
    assert config.service.pipelines["logs"].processors == []
    assert config.processors == {"normalise": {}, "cost": {}}
    assert config.exporters == {"store": {}}
    assert config.storage.catalog_path() == str(Path("./agentledger-data/catalog.ducklake"))
    assert config.storage.data_path_resolved() == str(Path("./agentledger-data/data")) + "/"


def test_default_file_spells_out_every_setting() -> None:
    # Equality above would also hold for an empty file; the file is meant as documentation.
    raw = yaml.safe_load((REPO / "config" / "default.yaml").read_text(encoding="utf-8"))

    def missing(cls: type, section: dict[str, Any], path: str) -> list[str]:
        hints = get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            if not f.init:  # not a setting (the loader's notices)
                continue
            tp = hints[f.name]
            if type(None) in get_args(tp):  # `X | None`: look inside X
                tp = get_args(tp)[0]
            if f.name not in section:
                out.append(f"{path}{f.name}")
            elif "parser" in f.metadata:  # a map of component ids, not of fixed keys
                continue
            elif dataclasses.is_dataclass(tp) and section[f.name] is not None:
                out += missing(tp, section[f.name], f"{path}{f.name}.")  # type: ignore[arg-type]
        return out

    assert missing(Config, raw, "") == []
    assert missing(GrpcConfig, raw["receivers"]["otlp"]["protocols"]["grpc"], "") == []


def test_each_default_section_names_the_module_of_its_config_class() -> None:
    # Any key is one hop from its code: `storage:  # collector/store/config.py`.
    text = (REPO / "config" / "default.yaml").read_text(encoding="utf-8")
    homes = dict(re.findall(r"^([a-z_]+):\s+# (\S+\.py)", text, re.M))
    hints = get_type_hints(Config)
    sections = [f.name for f in dataclasses.fields(Config) if f.init]
    assert sorted(homes) == sorted(sections)
    for name, home in homes.items():
        assert (REPO / home).is_file(), f"{name}: {home} does not exist"
        if dataclasses.is_dataclass(hints[name]):
            module = hints[name].__module__.replace(".", "/") + ".py"
            assert module == home, f"{name}: {hints[name].__name__} is in {module}, not {home}"


def test_the_old_logs_section_is_read_as_evals_with_a_notice() -> None:
    config = parse_config({"logs": {"worker_batch": 7}}, {})
    assert config.evals.worker_batch == 7
    assert config.notices == ["the `logs:` section is deprecated: rename it to `evals:`"]
    assert parse_config({"evals": {"worker_batch": 7}}, {}).notices == []
    both = messages({"logs": {}, "evals": {}})
    assert both == {"logs": "renamed to `evals:`, which is also set; keep only `evals:`"}


@pytest.mark.parametrize("raw", [None, {}])
def test_an_empty_file_is_the_defaults(raw: object) -> None:
    assert parse_config(raw, {}) == Config()


def test_explicit_catalog_and_data_path_are_kept() -> None:
    s3 = {"key_id": "k", "secret": "s"}
    raw = {"storage": {"catalog": "pg.ducklake", "data_path": "s3://b/", "s3": s3}}
    storage = parse_config(raw, {})
    assert storage.storage.catalog_path() == "pg.ducklake"
    assert storage.storage.data_path_resolved() == "s3://b/"


# --- unknown keys, several errors, types -------------------------------------------------------


def test_typo_key_is_reported_with_path_and_suggestion() -> None:
    raw = {"receivers": {"otlp": {"protocols": {"grpc": None, "htttp": None}}}}
    assert issues_of(raw) == [
        ConfigIssue(
            "receivers.otlp.protocols.htttp",
            "unknown key (expected one of: grpc, http; did you mean 'http'?)",
        )
    ]


def test_unknown_top_level_key_without_a_close_match() -> None:
    assert messages({"zzz": 1}) == {
        "zzz": "unknown key (expected one of: receivers, processors, exporters, extensions, "
        "service, storage, cluster, limits, api, auth, mcp, retention, compaction, prices, roi, "
        "outbound, notifications, judge, secrets, alerts, evals, ui)"
    }


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "storage:\n  commit_interval_ms: fast\n  fsync: 1\n"
        "limits:\n  decode_workers: -1\n"
        "service:\n  telemetry:\n    logs:\n      level: verbose\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value).splitlines() == [
        "service.telemetry.logs.level: expected one of: debug, info, warning, error; got 'verbose'",
        "storage.commit_interval_ms: expected an integer, got 'fast'",
        "storage.fsync: expected a boolean (true or false), got 1",
        "limits.decode_workers: must be >= 0, got -1",
    ]


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("storage", "path", 5, "expected a string, got 5"),
        ("storage", "commit_max_rows", True, "expected an integer, got true"),
        ("storage", "commit_max_rows", 1.5, "expected an integer, got 1.5"),
        ("storage", "commit_max_rows", "10", "expected an integer, got '10' (a quoted string; "
         "remove the quotes)"),
        ("storage", "fsync", "yes", "expected a boolean (true or false), got 'yes'"),
        ("storage", "fsync", "true", "expected a boolean (true or false), got 'true' (a quoted "
         "string; remove the quotes)"),
        ("storage", "fsync", 0, "expected a boolean (true or false), got 0"),
        ("storage", "catalog", ["x"], "expected a string, got a list"),
        ("storage", "path", None, "expected a string, got null"),
        ("storage", "commit_interval_ms", 0, "must be between 1 and 10000, got 0"),
        ("storage", "commit_interval_ms", 10_001, "must be between 1 and 10000, got 10001"),
        ("limits", "max_queue_items", 0, "must be >= 1, got 0"),
        ("auth", "orgs", {"name": "x"}, "expected a list, got a mapping"),
        ("auth", "bootstrap", None, "expected a boolean (true or false), got null"),
        ("service", "pipelines", ["traces"], "expected a mapping, got a list"),
        ("service", "telemetry", "loud", "expected a mapping, got 'loud'"),
        ("api", "endpoint", 4318, "expected a string, got 4318"),
    ],
)  # fmt: skip
def test_type_mismatch(section: str, key: str, value: object, message: str) -> None:
    assert issues_of({section: {key: value}}) == [ConfigIssue(f"{section}.{key}", message)]


def test_a_section_that_is_not_a_mapping() -> None:
    assert messages({"storage": 3}) == {"storage": "expected a mapping, got 3"}
    assert messages(["storage"]) == {"": "expected a mapping, got a list"}
    assert str(ConfigError([ConfigIssue("", "x")])) == "<root>: x"


def test_literal_suggests_the_lowercase_spelling() -> None:
    assert messages({"service": {"telemetry": {"logs": {"format": "JSON"}}}}) == {
        "service.telemetry.logs.format": "expected one of: text, json; got 'JSON'; "
        "did you mean 'json'?"
    }


def test_a_null_section_means_its_defaults() -> None:
    config = parse_config({"storage": None, "limits": None, "service": {"telemetry": None}}, {})
    assert (config.storage, config.limits, config.service) == (
        Config().storage,
        Config().limits,
        Config().service,
    )


def test_a_null_component_section_declares_no_components() -> None:
    config = parse_config({"processors": None, "service": {"pipelines": {}}}, {})
    assert config.processors == {}


# --- endpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("127.0.0.1:4317", ("127.0.0.1", 4317)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:4317", ("::1", 4317)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
    ],
)
def test_valid_endpoints(endpoint: str, expected: tuple[str, int]) -> None:
    assert split_endpoint(endpoint) == expected
    raw = {"receivers": {"otlp": {"protocols": {"http": {"endpoint": endpoint}}}}}
    assert parse_config(raw, {}).receivers == ReceiversConfig(
        otlp=OtlpReceiverConfig(protocols=OtlpProtocols(http=HttpConfig(endpoint=endpoint)))
    )


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("localhost", "expected host:port (IPv6 as [::1]:4317), got 'localhost'"),
        (":4317", "expected host:port (IPv6 as [::1]:4317), got ':4317'"),
        ("::1:4317", "expected host:port (IPv6 as [::1]:4317), got '::1:4317'"),
        ("host:port", "expected host:port (IPv6 as [::1]:4317), got 'host:port'"),
        ("http://h:1", "expected host:port (IPv6 as [::1]:4317), got 'http://h:1'"),
        ("[nope]:1", "'nope' in brackets is not an IPv6 address"),
        ("h:65536", "port 65536 is out of range (0-65535; 0 picks a free port)"),
    ],
)
def test_invalid_endpoints(endpoint: str, message: str) -> None:
    raw = {"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": endpoint}}}}}
    assert issues_of(raw) == [ConfigIssue("receivers.otlp.protocols.grpc.endpoint", message)]


def test_api_endpoint_must_differ_from_the_http_endpoint() -> None:
    assert messages({"api": {"endpoint": "127.0.0.1:4318"}}) == {
        "api.endpoint": "127.0.0.1:4318 is already the address of "
        "receivers.otlp.protocols.http.endpoint"
    }


def test_port_zero_listeners_never_collide() -> None:
    protocols = {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}
    raw = {"receivers": {"otlp": {"protocols": protocols}}, "api": {"endpoint": "127.0.0.1:0"}}
    assert parse_config(raw, {}).api.endpoint == "127.0.0.1:0"


def test_protocols_null_means_defaults_and_absent_means_off() -> None:
    config = parse_config({"receivers": {"otlp": {"protocols": {"grpc": None}}}}, {})
    assert config.receivers == ReceiversConfig(
        otlp=OtlpReceiverConfig(protocols=OtlpProtocols(grpc=GrpcConfig()))
    )
    assert parse_config({"receivers": {"otlp": None}}, {}) == Config()
    assert messages({"receivers": {"otlp": {"protocols": {}}}}) == {
        "receivers.otlp.protocols": "enable at least one of grpc, http"
    }


# --- pipelines and components ---------------------------------------------------------------


def test_pipelines_must_name_declared_components() -> None:
    raw = {
        "processors": {"normalise": None, "batch/big": {}},
        "exporters": {"store": None},
        "service": {
            "pipelines": {
                "traces": {
                    "receivers": ["otlp", "zipkin"],
                    "processors": ["normalize", "cost"],
                    "exporters": ["store", "otlp/forward"],
                },
                "spans": {"receivers": ["otlp"], "exporters": ["store"]},
                "logs/eu": {"receivers": [], "exporters": ["store", "store"]},
            }
        },
    }
    assert messages(raw) == {
        "service.pipelines.spans": "a pipeline id is traces, logs or metrics, optionally with "
        "/name (e.g. traces/eu)",
        "service.pipelines.logs/eu.receivers": "a pipeline needs at least one of its receivers",
        "service.pipelines.logs/eu.exporters[1]": "'store' is listed twice",
        "service.pipelines.traces.receivers[1]": "receiver 'zipkin' is not declared in receivers "
        "(declared: otlp)",
        "service.pipelines.traces.processors[0]": "processor 'normalize' is not declared in "
        "processors (declared: normalise, batch/big; did you mean 'normalise'?)",
        "service.pipelines.traces.processors[1]": "processor 'cost' is not declared in "
        "processors (declared: normalise, batch/big)",
        "service.pipelines.traces.exporters[1]": "exporter 'otlp/forward' is not declared in "
        "exporters (declared: store)",
    }


def test_default_components_apply_only_without_a_section() -> None:
    pipelines = {"traces": {"receivers": ["otlp"], "processors": ["cost"], "exporters": ["store"]}}
    config = parse_config({"service": {"pipelines": pipelines}}, {})
    assert config.processors == {"normalise": {}, "cost": {}}
    # A `processors:` section replaces the defaults, so the default traces pipeline now fails.
    assert messages({"processors": {"cost": {"x": 1}}}) == {
        "service.pipelines.traces.processors[0]": "processor 'normalise' is not declared in "
        "processors (declared: cost)"
    }


def test_receiver_left_out_of_a_receivers_section_is_off() -> None:
    config = parse_config({"receivers": {}, "service": {"pipelines": {}}}, {})
    assert config.receivers.otlp is None
    assert messages({"receivers": None})["service.pipelines.traces.receivers[0]"] == (
        "receiver 'otlp' is not declared in receivers (declared: none)"
    )


def test_component_sections_keep_raw_settings_and_check_ids() -> None:
    config = parse_config({"exporters": {"store": None, "otlp/forward": {"endpoint": "x:1"}}}, {})
    assert config.exporters == {"store": {}, "otlp/forward": {"endpoint": "x:1"}}
    assert messages({"exporters": {"store": {}, "Bad Id": {}, "otlp/": {}, "x": 3}}) == {
        "exporters.Bad Id": "invalid component id (expected type or type/name, e.g. otlp/forward)",
        "exporters.otlp/": "invalid component id (expected type or type/name, e.g. otlp/forward)",
        "exporters.x": "expected a mapping of settings, got 3",
    }
    # A bad section keeps its defaults, so the default pipelines report nothing more.
    assert messages({"processors": ["cost"]}) == {
        "processors": "expected a mapping of component ids, got a list"
    }


@pytest.mark.parametrize(
    ("cid", "expected"),
    [("otlp", "otlp"), ("otlp/forward", "otlp"), ("traces/eu/1", "traces")],
)
def test_component_type(cid: str, expected: str) -> None:
    assert component_type(cid) == expected


# --- files and overrides -------------------------------------------------------------------


def test_data_dir_override_replaces_storage_path(tmp_path: Path) -> None:
    path = write(tmp_path, "storage:\n  path: /somewhere/else\n  catalog: null\n")
    config = load_config(path, {}, ConfigOverrides(data_dir=tmp_path / "data"))
    assert config.storage.path == str(tmp_path / "data")
    assert config.storage.catalog_path() == str(tmp_path / "data" / "catalog.ducklake")
    assert load_config(None, {}, ConfigOverrides(data_dir=None)) == Config()


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("storage:\n  path: x\n  fsync: [true\nlimits: {}\n", 4),
        ("storage:\n  path: x\n bad: indent\n", 3),
        ("storage:\n  path: a\n  path: b\n", 3),  # a repeated key is an error, not "last wins"
    ],
)
def test_bad_yaml_reports_its_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    [issue] = caught.value.issues
    assert issue.path == str(path)
    assert issue.message.startswith(f"invalid YAML at line {line}, column ")


def test_bad_yaml_never_quotes_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, f"auth:\n  orgs: [{{key: {INGEST}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert INGEST[12:] not in str(caught.value)


def test_yaml_boolean_key_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "storage:\n  on: 1\n"), {})
    assert caught.value.issues == [
        ConfigIssue("storage.True", "key true is not a string (quote it)")
    ]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "nope.yaml", {})


PRODUCTION_ENV = {
    "ACME_INGEST_KEY": INGEST,
    "ACME_READ_KEY": READ,
    "ACME_ADMIN_KEY": ADMIN,
    "GLOBEX_INGEST_KEY": "al_live_00000001_" + "e" * 40,
    "GLOBEX_READ_KEY": "al_read_00000002_" + "f" * 40,
}


def test_production_example_loads_given_its_env() -> None:
    config = load_config(REPO / "config" / "examples" / "production.yaml", PRODUCTION_ENV)
    assert [org.name for org in config.auth.orgs] == ["acme", "globex"]
    assert config.auth.orgs[0].keys[0].key == INGEST
    assert config.auth.bootstrap is False
    assert config.api.endpoint == "127.0.0.1:8080"
    assert config.limits.decode_workers == 8
    assert config.limits.max_queue_items > Config().limits.max_queue_items
    assert config.storage.path == "/var/lib/agentledger"
    assert config.service.telemetry.logs.level == "info"


def test_production_example_without_env_names_each_missing_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(REPO / "config" / "examples" / "production.yaml", {})
    # One issue per variable: the empty value it became is not reported again as a bad key.
    assert [i.path for i in caught.value.issues] == [
        "auth.orgs[0].keys[0].key",
        "auth.orgs[0].keys[1].key",
        "auth.orgs[0].keys[2].key",
        "auth.orgs[1].keys[0].key",
        "auth.orgs[1].keys[1].key",
    ]
    assert all("is not set" in i.message for i in caught.value.issues)
