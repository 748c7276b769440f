"""The `redact:` processor and its rules: every detector, the actions, key globs, numbers, arrays.

Values go through `Redactor` directly, and whole OTLP requests through the real decode path,
`RedactProcessor` and `NormaliseProcessor`, checking every committed column.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.configparse import ConfigIssue, parse_dataclass
from collector.decode import decode
from collector.model import Signal
from collector.store.schema import TABLES
from processors.normalise.span import NormaliseConfig, NormaliseProcessor
from processors.redact.processor import (
    REDACTIONS_METRIC,
    RedactConfig,
    Redactor,
    RedactProcessor,
    RedactRule,
)
from tests.otlp_factory import kv

KEY = "k" * 32
# Built from parts so that secret scanners do not flag this file.
OPENAI = "sk-" + "proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" + "T3BlbkFJ" + "x" * 20
ANTHROPIC = "sk-" + "ant-api03-" + "A1b2C3d4" * 11 + "-AA"
AWS = "AKIA" + "IOSFODNN7EXAMPLE"
GITHUB = "ghp" + "_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
SLACK = "xox" + "b-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
GOOGLE = "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"
STRIPE = "sk" + "_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
OURS = "al_live_aaaa0001_" + "1" * 40

POSITIVE = {
    "email": ["alice.smith@example.com", "bob+tag@mail.example.co.uk", "jörg@example.de"],
    "card": ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "4242424242424242"],
    "phone": ["+1 415 555 2671", "+44 20 7946 0958", "(415) 555-2671", "415-555-2671"],
    "iban": [
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "FR1420041010050500013M02606",
    ],
    "api_key": [OPENAI, ANTHROPIC, AWS, GITHUB, SLACK, GOOGLE, STRIPE, JWT, OURS],
}
NEGATIVE = {
    "email": ["user at example dot com", "@handle", "a@b", "name@localhost"],
    "card": ["4111 1111 1111 1112", "1700000000000000000", "1234567890123", "order 4111-1111"],
    "phone": ["2024-01-15", "+1", "version 1.2.3", "10.0.0.1", "12:30:45", "call 5552671"],
    "iban": ["DE89 3704 0044 0532 0130 01", "XX12 3456 7890 1234 56", "GB82 WEST"],
    "api_key": [
        "sk-short",
        "task-1234567890abcdefghijklmnop",
        "AKIAshort",
        "ghp_short",
        "Bearer x",
    ],
}


def redactor(**settings: Any) -> Redactor:
    return Redactor(RedactConfig(hash_key=KEY, **settings))


@pytest.mark.parametrize(
    ("detector", "value"), [(d, v) for d, values in POSITIVE.items() for v in values]
)
def test_each_detector_finds_its_examples(detector: str, value: str) -> None:
    r = redactor(detectors=[detector])
    out = r.text(f"before {value} after", field="message")
    assert value not in out
    assert out == f"before [REDACTED:{detector}] after"
    assert r.counts == {detector: 1}


@pytest.mark.parametrize(
    ("detector", "value"), [(d, v) for d, values in NEGATIVE.items() for v in values]
)
def test_each_detector_leaves_lookalikes_alone(detector: str, value: str) -> None:
    r = redactor(detectors=[detector])
    assert r.text(f"before {value} after", field="message") == f"before {value} after"
    assert not r.counts


def test_all_detectors_together_leave_ordinary_telemetry_alone() -> None:
    r = redactor()
    ordinary = {
        "gen_ai.request.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 1234,
        "start": 1_700_000_000_000_000_000,
        "trace": "5b8efff798038103d269b633813fc60c",
        "http.url": "https://api.openai.com/v1/chat/completions",
        "when": "2024-05-01T12:30:00Z",
        "ratio": 0.25,
    }
    assert r.attributes(ordinary) is ordinary


def test_hash_is_keyed_and_joins_equal_values() -> None:
    r = redactor(detector_action="hash")
    a = r.text("mail alice@example.com", field="f")
    b = r.text("from alice@example.com!", field="f")
    c = r.text("mail carol@example.com", field="f")
    digest = a.removeprefix("mail ")
    assert digest.startswith("hmac:") and len(digest) == 37
    assert b == f"from {digest}!"
    assert c != a
    other = Redactor(RedactConfig(hash_key="x" * 32, detector_action="hash"))
    assert other.text("mail alice@example.com", field="f") != a


def test_drop_removes_the_attribute_and_masks_a_text() -> None:
    r = redactor(detector_action="drop")
    attrs = {"user": "alice@example.com", "n": 3}
    assert r.attributes(attrs) == {"n": 3}
    assert r.text("write to alice@example.com", field="f") == "[REDACTED:dropped]"
    assert r.value({"to": ["a", "alice@example.com"]}, field="f") == {"to": ["a"]}


def test_key_globs_block_allow_and_ignore() -> None:
    r = redactor(
        blocked_keys=["*password*", "http.request.header.authorization"],
        ignored_keys=["customer.contact"],
        rules=[RedactRule(name="tenant", keys=["tenant.*"], action="hash")],
    )
    out = r.attributes(
        {
            "db.Password": "hunter2",
            "http.request.header.authorization": "Basic abc",
            "customer.contact": "alice@example.com",
            "tenant.id": 42,
            "note": "mail bob@example.com",
        }
    )
    assert "db.Password" not in out and "http.request.header.authorization" not in out
    assert out["customer.contact"] == "alice@example.com"
    assert str(out["tenant.id"]).startswith("hmac:")
    assert out["note"] == "mail [REDACTED:email]"
    assert r.counts == {"blocked_keys": 2, "tenant": 1, "email": 1}

    allow = redactor(allowed_keys=["gen_ai.*", "service.name"])
    kept = allow.attributes({"gen_ai.request.model": "gpt-4o", "user.email": "x", "other": 1})
    assert kept == {"gen_ai.request.model": "gpt-4o"}
    assert allow.counts["allowed_keys"] == 2


def test_json_text_of_a_native_payload_is_redacted_by_key_and_value() -> None:
    r = redactor(blocked_keys=["*password*"])
    args = json.dumps({"user": "bob", "password": "hunter2", "to": ["alice@example.com"]})
    out = json.loads(r.text(args, field="args"))
    assert out == {"user": "bob", "to": ["[REDACTED:email]"]}
    clean = json.dumps({"query": "latest AI news"})
    assert r.text(clean, field="args") is clean
    assert r.text('{"cut": "alice@example.com', field="args") == '{"cut": "[REDACTED:email]'


def test_pattern_rule_scoped_to_keys() -> None:
    rule = RedactRule(name="order", pattern=r"ORD-\d{6}", keys=["shop.*"], action="mask")
    r = redactor(detectors=[], rules=[rule])
    out = r.attributes({"shop.note": "see ORD-123456", "other": "ORD-123456"})
    assert out == {"shop.note": "see [REDACTED:order]", "other": "ORD-123456"}


def test_numbers_arrays_and_nested_maps() -> None:
    r = redactor()
    out = r.attributes(
        {
            "card": 4111111111111111,
            "tokens": 4111111111111112,
            "emails": ["ok", "alice@example.com", 7],
            "nested": {"deep": {"key": OPENAI}, "flag": True},
        }
    )
    assert out["card"] == "[REDACTED:card]"
    assert out["tokens"] == 4111111111111112
    assert out["emails"] == ["ok", "[REDACTED:email]", 7]
    assert out["nested"] == {"deep": {"key": "[REDACTED:api_key]"}, "flag": True}


def _trace_request() -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", "svc"), kv("owner", "ops@example.com")])
    ss = rs.scope_spans.add()
    ss.scope.name = "scope"
    ss.scope.attributes.append(kv("scope.token", AWS))
    for i in range(3):
        span = ss.spans.add()
        span.trace_id = bytes([1] * 16)
        span.span_id = bytes([i + 1] * 8)
        span.name = f"chat for alice@example.com {i}" if i == 0 else "chat gpt-4o"
        span.status.message = "card 4111 1111 1111 1111 declined" if i == 1 else ""
        span.attributes.extend(
            [
                kv("gen_ai.operation.name", "chat"),
                kv("gen_ai.request.model", "gpt-4o"),
                kv("gen_ai.usage.input_tokens", 100 + i),
                kv("gen_ai.prompt", f"my key is {OPENAI}" if i == 2 else "hello"),
                kv("user.password", "hunter2"),
            ]
        )
        if i == 0:
            ev = span.events.add()
            ev.name = "gen_ai.user.message"
            ev.attributes.append(kv("content", "iban DE89 3704 0044 0532 0130 00"))
            link = span.links.add()
            link.trace_id = bytes([2] * 16)
            link.span_id = bytes([2] * 8)
            link.attributes.append(kv("by", "bob@example.com"))
    return req.SerializeToString()


SECRETS = [
    "alice@example.com", "ops@example.com", "bob@example.com", AWS, OPENAI, "hunter2",
    "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00",
]  # fmt: skip


def test_a_whole_trace_batch_is_redacted_in_every_column() -> None:
    batch = decode(Signal.TRACES, "acme", _trace_request(), "protobuf")
    processor = RedactProcessor(RedactConfig(hash_key=KEY, blocked_keys=["*password*"]))
    batch = processor.process(batch)
    batch = NormaliseProcessor(NormaliseConfig()).process(batch)
    committed = json.dumps(batch.columns, default=str)
    for secret in SECRETS:
        assert secret not in committed, secret
    assert json.loads(batch.columns["attributes"][0]) == batch.attributes[0]
    assert batch.attributes[2]["gen_ai.prompt"] == "my key is [REDACTED:api_key]"
    assert batch.columns["input_text"][2] == "my key is [REDACTED:api_key]"
    assert batch.columns["input_tokens"] == [100, 101, 102]
    assert batch.resources[0]["owner"] == "[REDACTED:email]"
    counted = {k[2]: n for k, n in batch.counters.items() if k[0] == REDACTIONS_METRIC}
    assert counted == {"blocked_keys": 3, "email": 3, "api_key": 2, "card": 1, "iban": 1}
    assert set(batch.columns) >= {c.name for c in TABLES[Signal.TRACES]} - {"span_key"}


def test_log_bodies_and_attributes() -> None:
    req = ExportLogsServiceRequest()
    rec = req.resource_logs.add().scope_logs.add().log_records.add()
    rec.body.CopyFrom(AnyValue(string_value=f"user alice@example.com sent {STRIPE}"))
    rec.attributes.append(KeyValue(key="phone", value=AnyValue(string_value="+1 415 555 2671")))
    batch = RedactProcessor(RedactConfig()).process(
        decode(Signal.LOGS, "acme", req.SerializeToString(), "protobuf")
    )
    assert json.loads(batch.columns["body"][0]) == ("user [REDACTED:email] sent [REDACTED:api_key]")
    assert batch.attributes[0] == {"phone": "[REDACTED:phone]"}


def test_a_clean_batch_is_left_as_it_was() -> None:
    payload = _trace_request().replace(b"@example.com", b"_example.com")
    batch = decode(Signal.TRACES, "acme", payload, "protobuf")
    before = batch.columns["attributes"][1]
    processor = RedactProcessor(RedactConfig(detectors=["email"]))
    out = processor.process(batch)
    assert out.columns["attributes"][1] is before
    assert out.counters == {}


def _issues(raw: dict[str, Any]) -> list[str]:
    issues: list[ConfigIssue] = []
    parse_dataclass(RedactConfig, raw, "processors.redact", issues)
    return [str(i) for i in issues]


def test_config_is_checked() -> None:
    assert _issues({}) == []
    assert any("unknown 'ssn'" in i for i in _issues({"detectors": ["ssn"]}))
    assert any("hash_key" in i for i in _issues({"detector_action": "hash"}))
    bad = {"rules": [{"name": "x", "pattern": "(?<=a)b"}]}
    assert any("RE2" in i for i in _issues(bad))
    assert any("needs keys, pattern" in i for i in _issues({"rules": [{"name": "x"}]}))
    assert any("actoin" in i for i in _issues({"rules": [{"name": "x", "actoin": "drop"}]}))
    assert any("{rule}" in i for i in _issues({"mask": "{value}"}))
