"""Tests for the typed parser (`collector/configparse.py`) with a schema of its own, and for
`${env:...}` expansion (`collector/configenv.py`) inside the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from collector.config import parse_config
from collector.configenv import expand_env
from collector.configparse import ConfigIssue, bounds, parse_dataclass
from tests.collector.confighelp import ADMIN, messages

# --- the generic parser, with a schema of its own ---------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Inner:
    ratio: float = 0.5
    tags: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Sample:
    name: str
    mode: Literal["a", "b", 1] = "a"
    inner: Inner | None = None
    extra: Any = None
    items: list[Inner] = field(default_factory=list)
    workers: int = field(default=1, metadata=bounds(ge=0, le=8))
    note: str | None = "x"

    def validate(self) -> list[str]:
        return ["name and note must differ"] if self.name == self.note else []


def parse_sample(raw: object) -> tuple[Sample, list[ConfigIssue]]:
    errors: list[ConfigIssue] = []
    return parse_dataclass(Sample, raw, "sample", errors), errors


def test_parser_builds_every_supported_type() -> None:
    sample, errors = parse_sample(
        {
            "name": "n",
            "mode": 1,
            "inner": {"ratio": 2, "tags": {"a": 1}},
            "extra": {"anything": [1, None]},
            "items": [{"ratio": 0.25}, None],
            "workers": 8,
            "note": None,
        }
    )
    assert errors == []
    assert sample == Sample(
        name="n",
        mode=1,
        inner=Inner(ratio=2.0, tags={"a": 1}),
        extra={"anything": [1, None]},
        items=[Inner(ratio=0.25), Inner()],
        workers=8,
        note=None,
    )
    assert isinstance(sample.inner, Inner) and type(sample.inner.ratio) is float


def test_parser_records_each_problem_and_falls_back_to_defaults() -> None:
    sample, errors = parse_sample(
        {
            "mode": True,
            "inner": {"ratio": "half", "tags": {"a": "1", 2: 3}},
            "items": [{"ratio": False}],
            "workers": 9,
        }
    )
    assert errors == [
        ConfigIssue("sample.name", "required"),
        ConfigIssue("sample.mode", "expected one of: a, b, 1; got true"),
        ConfigIssue("sample.inner.ratio", "expected a number, got 'half'"),
        ConfigIssue("sample.inner.tags.a", "expected an integer, got '1' (a quoted string; "
                    "remove the quotes)"),
        ConfigIssue("sample.inner.tags.2", "key 2 is not a string (quote it)"),
        ConfigIssue("sample.items[0].ratio", "expected a number, got false"),
        ConfigIssue("sample.workers", "must be between 0 and 8, got 9"),
    ]  # fmt: skip
    assert sample.mode == "a" and sample.workers == 1


def test_validate_runs_after_a_build_and_reports_at_the_dataclass_path() -> None:
    _, errors = parse_sample({"name": "x"})
    assert errors == [ConfigIssue("sample", "name and note must differ")]


def test_validate_is_skipped_when_a_required_field_is_unusable() -> None:
    # The placeholder name "" must not produce a second, misleading message.
    _, errors = parse_sample({"name": 3, "note": ""})
    assert errors == [ConfigIssue("sample.name", "expected a string, got 3")]


def test_float_rejects_non_finite_and_env_values_coerce() -> None:
    errors: list[ConfigIssue] = []
    raw = expand_env({"ratio": "${env:R}"}, {"R": "0.75"}, "", errors)
    assert parse_dataclass(Inner, raw, "inner", errors) == Inner(ratio=0.75)
    parse_dataclass(Inner, {"ratio": float("inf")}, "inner", errors)
    assert errors == [ConfigIssue("inner.ratio", "expected a finite number, got inf")]


def test_unsupported_field_types_are_a_programming_error() -> None:
    @dataclass(frozen=True)
    class Bad:
        value: int | str = 0

    with pytest.raises(TypeError, match=r"only `X \| None` unions"):
        parse_dataclass(Bad, {"value": 1}, "", [])


# --- ${env:...} ------------------------------------------------------------------------------


def env_value(value: str, env: dict[str, str]) -> object:
    errors: list[ConfigIssue] = []
    expanded = expand_env({"a": [value]}, env, "", errors)
    assert errors == []
    return expanded


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${env:DIR}", {"DIR": "/data"}, "/data"),
        ("${env:DIR:-/fallback}", {}, "/fallback"),
        ("${env:DIR:-/fallback}", {"DIR": "/set"}, "/set"),
        ("${env:DIR:-}", {"DIR": ""}, ""),
        ("${env:DIR:-x}", {"DIR": ""}, ""),  # as in the OTel Collector: only unset takes default
        ("/srv/${env:ORG}/${env:ENV:-prod}", {"ORG": "acme"}, "/srv/acme/prod"),
        ("$${env:DIR}", {"DIR": "/data"}, "${env:DIR}"),
        ("cost$$5 $${x}", {}, "cost$$5 ${x}"),
        ("${env:DIR}", {"DIR": "${env:OTHER}"}, "${env:OTHER}"),  # not expanded twice
        ("$DIR", {"DIR": "x"}, "$DIR"),
    ],
)
def test_env_expansion(value: str, env: dict[str, str], expected: str) -> None:
    assert env_value(value, env) == {"a": [expected]}


def test_env_expansion_inside_the_config() -> None:
    config = parse_config({"storage": {"path": "${env:DIR}/x"}}, {"DIR": "/data"})
    assert config.storage.path == "/data/x"
    assert type(config.storage.path) is str  # the expansion marker does not leak into Config
    raw = {"api": {"endpoint": "${env:HOST}:${env:PORT:-8080}"}}
    assert parse_config(raw, {"HOST": "10.0.0.1"}).api.endpoint == "10.0.0.1:8080"


def test_unset_variable_without_default_is_an_error_at_its_path() -> None:
    raw = {"storage": {"path": "/x/${env:MISSING}", "commit_max_rows": "${env:ROWS}"}}
    assert messages(raw) == {
        "storage.path": "environment variable MISSING is not set and has no default "
        "(write ${env:MISSING:-value} to give one)",
        "storage.commit_max_rows": "environment variable ROWS is not set and has no default "
        "(write ${env:ROWS:-value} to give one)",
    }


def test_nested_default_is_an_error() -> None:
    assert messages({"storage": {"path": "${env:A:-${env:B}}"}}) == {
        "storage.path": "nested '${' in the default of ${env:A}"
    }


@pytest.mark.parametrize("value", ["${}", "${env:}", "${env:DIR-x}", "${env:A B}", "${file:}"])
def test_malformed_reference_is_an_error(value: str) -> None:
    assert messages({"storage": {"path": value}}) == {
        "storage.path": "invalid '${' reference (expected ${env:NAME}, ${NAME}, "
        "${env:NAME:-default} or ${file:PATH}; write $${ for a literal '${')"
    }


def test_bare_names_are_environment_references_as_in_the_collector() -> None:
    raw = {"storage": {"path": "${DIR}/x", "commit_max_rows": "${ROWS:-7}"}}
    config = parse_config(raw, {"DIR": "/data"})
    assert (config.storage.path, config.storage.commit_max_rows) == ("/data/x", 7)
    assert messages({"storage": {"path": "${NOPE}"}}) == {
        "storage.path": "environment variable NOPE is not set and has no default "
        "(write ${env:NOPE:-value} to give one)"
    }


def test_file_references_read_a_secret_file_without_its_line_break(tmp_path: Path) -> None:
    secret = tmp_path / "admin_key"
    secret.write_text(ADMIN + "\n", encoding="utf-8")
    rows = tmp_path / "rows"
    rows.write_text("123\n", encoding="utf-8")
    raw = {
        "storage": {"commit_max_rows": f"${{file:{rows}}}"},
        "auth": {
            "orgs": [{"name": "acme", "keys": [{"scope": "admin", "key": f"${{file:{secret}}}"}]}]
        },
    }
    config = parse_config(raw, {})
    assert config.storage.commit_max_rows == 123  # a whole reference converts like ${env:}
    assert config.auth.orgs[0].keys[0].key == ADMIN


def test_an_unreadable_file_reference_names_the_file_not_its_content(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert messages({"storage": {"path": f"${{file:{missing}}}"}}) == {
        "storage.path": f"cannot read ${{file:{missing}}}: No such file or directory"
    }


def test_whole_env_values_coerce_for_numbers_and_booleans() -> None:
    raw = {
        "receivers": {"otlp": {"protocols": {"grpc": {"max_recv_msg_size_mib": "${env:MIB}"}}}},
        "storage": {"fsync": "${env:FSYNC}", "commit_max_rows": "${env:ROWS:-7}"},
        "limits": {"decode_workers": "${env:WORKERS}"},
        "api": {"endpoint": "${env:API:-}"},
    }
    env = {"MIB": "16", "FSYNC": "False", "WORKERS": " 0 "}
    config = parse_config(raw, env)
    assert config.receivers.otlp is not None
    assert config.receivers.otlp.protocols.grpc is not None
    assert config.receivers.otlp.protocols.grpc.max_recv_msg_size_mib == 16
    assert config.storage.fsync is False
    assert config.storage.commit_max_rows == 7
    assert config.limits.decode_workers == 0
    assert config.api.endpoint is None  # empty whole env value = null where null is allowed
    assert type(config.storage.path) is str


def test_env_coercion_needs_the_whole_value_and_a_valid_spelling() -> None:
    raw = {
        "storage": {"commit_max_rows": "1${env:ZEROS}", "fsync": "${env:FSYNC}"},
        "limits": {"decode_workers": "${env:WORKERS}"},
    }
    assert messages(raw, {"ZEROS": "000", "FSYNC": "yes", "WORKERS": "2.0"}) == {
        "storage.commit_max_rows": "expected an integer, got '1000' (only a value that is "
        "exactly one ${env:...} reference is converted)",
        "storage.fsync": "expected a boolean (true or false), got 'yes'",
        "limits.decode_workers": "expected an integer, got '2.0'",
    }


def test_env_values_stay_marked_for_components_parsed_later() -> None:
    # The registry parses `processors.<id>` with the component's own dataclass; a whole
    # ${env:...} value must still coerce there.
    raw = {"processors": {"normalise": None, "cost": {"ratio": "${env:R}"}}}
    config = parse_config(raw, {"R": "3"})
    errors: list[ConfigIssue] = []
    inner = parse_dataclass(Inner, config.processors["cost"], "processors.cost", errors)
    assert (inner, errors) == (Inner(ratio=3.0), [])
