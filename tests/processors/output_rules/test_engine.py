"""Each output rule type with a passing, a triggering and an invalid value; the verdict."""

from __future__ import annotations

import time

import pytest

from processors.output_rules.engine import (
    RULE_TYPES,
    RuleResult,
    ValueProblem,
    combine,
    compile_rule,
)


def outcome(rule_type: str, value: str, output: str, confidence: float | None = None) -> str:
    return compile_rule(rule_type, value).evaluate(output, confidence).outcome


CASES = [
    # type, value, passing output, triggering output
    ("keyword_required", "refund, thank you", "A Refund — thank  you!", "A refund."),
    ("keyword_required", "any: refund, credit", "store CREDIT issued", "nothing"),
    ("keyword_required", "order*", "orders shipped", "no such word"),
    ("keyword_forbidden", "hell, damn", "hello there", "what the Hell."),
    ("keyword_forbidden", '"as an AI, I"', "I can help", "As an AI, I cannot"),
    ("regex_match", r"^ORD-\d{6}$", "ORD-123456", "order 12"),
    ("regex_match", "/hello/i", "HELLO world", "bye"),
    ("regex_match", r"!\b\d{3}-\d{2}-\d{4}\b", "no number", "ssn 123-45-6789"),
    ("length_limit", "20", "short", "x" * 21),
    ("length_limit", "max 3 words", "one two three", "one two three four"),
    ("length_limit", "min 5", "long enough", "tiny"),
    ("length_limit", "5-10 characters", "x" * 7, "x" * 11),
    (
        "json_field",
        "customer.email, items[0].sku",
        '{"customer":{"email":"a@b"},"items":[{"sku":"X"}]}',
        '{"customer":{}}',
    ),
    (
        "json_field",
        "$.status = approved",
        'Here:\n```json\n{"status": "Approved"}\n```',
        '{"status":"rejected"}',
    ),
    ("json_field", "ok = true", '{"ok": true}', '{"ok": 1}'),
    ("json_field", 'a["b c"][-1] = 3', '{"a": {"b c": [1, 3]}}', "not json at all"),
    (
        "json_field_keyword_required",
        "reply.text: sorry",
        '{"reply":{"text":"So SORRY"}}',
        '{"reply":{"text":"ok"}}',
    ),
    (
        "json_field_keyword_forbidden",
        "reply.text: guarantee*",
        '{"reply":{"text":"fine"}}',
        '{"reply":{"text":"guaranteed!"}}',
    ),
]


@pytest.mark.parametrize(("rule_type", "value", "good", "bad"), CASES)
def test_passing_and_triggering(rule_type: str, value: str, good: str, bad: str) -> None:
    assert outcome(rule_type, value, good) == "passed"
    assert outcome(rule_type, value, bad) == "triggered"


def test_confidence_threshold() -> None:
    for value in ("0.8", "80%", "80", ">= 0.8"):
        assert outcome("confidence_threshold", value, "", 0.85) == "passed"
        assert outcome("confidence_threshold", value, "", 0.5) == "triggered"
    assert outcome("confidence_threshold", "0.8", "", None) == "triggered"


INVALID = [
    ("keyword_required", " , ", "at least one keyword"),
    ("keyword_forbidden", "*", "only *"),
    ("regex_match", r"(a)\1", "invalid regular expression"),
    ("regex_match", "/x/q", "unknown regex flag"),
    ("length_limit", "lots", "write a maximum"),
    ("length_limit", "20-10", "empty"),
    ("confidence_threshold", "150%", "between 0 and 1"),
    ("confidence_threshold", "1.5", "between 0 and 1"),  # issue 20: was read as 1.5 %
    ("confidence_threshold", "high", "lowest acceptable"),
    ("json_field", "a..b", "two dots"),
    ("json_field", "items[x]", "not an array index"),
    ("json_field", "status =", "nothing after ="),
    ("json_field_keyword_required", "a.b", "colon"),
    ("json_field_keyword_forbidden", ": x", "colon"),
    ("llm_judge", "x" * 5000, "longer than"),
    ("llm_judge", "   ", "empty"),
    ("nope", "x", "unknown rule type"),
]


@pytest.mark.parametrize(("rule_type", "value", "message"), INVALID)
def test_invalid_values_say_what_is_wrong(rule_type: str, value: str, message: str) -> None:
    with pytest.raises(ValueProblem, match=message):
        compile_rule(rule_type, value)


def test_every_type_is_covered() -> None:
    covered = {c[0] for c in CASES} | {"confidence_threshold", "llm_judge"}
    assert covered == set(RULE_TYPES)
    assert compile_rule("llm_judge", "Is the reply polite?").check is None


def test_a_catastrophic_pattern_cannot_hang() -> None:
    rule = compile_rule("regex_match", "(a+)+$")
    started = time.perf_counter()
    assert rule.evaluate("a" * 200_000 + "!").outcome == "triggered"
    assert time.perf_counter() - started < 1.0


def test_combine() -> None:
    ok, bad = RuleResult("passed", "fine", 0.9), RuleResult("triggered", "missing 'x'")
    err = RuleResult("error", "judge timed out", 0.0)
    assert combine([]).status == "pass"
    assert combine([("a", ok)]).status == "pass"
    assert combine([("a", ok)]).confidence == 0.9
    flagged = combine([("a", ok), ("b", bad), ("c", err)])
    assert flagged.status == "flagged"
    assert "b: missing 'x'" in flagged.explanation and "could not evaluate c" in flagged.explanation
    assert combine([("a", ok), ("c", err)]).status == "error"
