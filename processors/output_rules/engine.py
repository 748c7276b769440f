"""Output rules: validate a rule's `value` for its type and evaluate the eight non-LLM types
against one AI output; combine per-rule results into a log's verdict.

The logs API compiles rules from `eval_rules` (and 422s a bad value with `ValueProblem`'s
message); the evaluator runs them here and runs `llm_judge` itself (network I/O).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from processors.output_rules.fields import json_field, json_keywords
from processors.output_rules.text import (
    Check,
    RuleResult,
    ValueProblem,
    forbidden,
    parse_keywords,
    parse_regex,
    passed,
    required,
    triggered,
)

__all__ = [
    "RULE_TYPES", "CompiledRule", "RuleEngine", "RuleResult", "ValueProblem", "Verdict",
    "combine", "compile_rule",
]  # fmt: skip

RULE_TYPES = (
    "keyword_required",
    "keyword_forbidden",
    "regex_match",
    "length_limit",
    "confidence_threshold",
    "llm_judge",
    "json_field",
    "json_field_keyword_required",
    "json_field_keyword_forbidden",
)
JUDGE_PROVIDERS = ("anthropic", "openai", "openrouter")
MAX_CRITERION_CHARS = 4000


@dataclass(frozen=True)
class CompiledRule:
    """A validated rule value; `check` is None for `llm_judge` (evaluated with I/O)."""

    type: str
    value: str
    check: Check | None

    @property
    def is_judge(self) -> bool:
        return self.check is None

    def evaluate(self, output: str, confidence: float | None = None) -> RuleResult:
        if self.check is None:
            raise ValueError("an llm_judge rule is evaluated by the judge, not here")
        return self.check(output, confidence)


def compile_rule(rule_type: str, value: Any) -> CompiledRule:
    """The rule ready to evaluate; `ValueProblem` says what is wrong with `value`."""
    if rule_type not in RULE_TYPES:
        raise ValueProblem(f"unknown rule type {rule_type!r}; one of {', '.join(RULE_TYPES)}")
    if not isinstance(value, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = repr(value)
        else:
            raise ValueProblem("the value must be a string")
    if not value.strip():
        raise ValueProblem("the value is empty")
    build = _BUILDERS[rule_type]
    return CompiledRule(rule_type, value, build(value))


# -- text rules ----------------------------------------------------------------------------


def _keyword_required(value: str) -> Check:
    kw = parse_keywords(value)

    def check(output: str, _: float | None) -> RuleResult:
        return required(kw, output, "the output")

    return check


def _keyword_forbidden(value: str) -> Check:
    kw = parse_keywords(value)

    def check(output: str, _: float | None) -> RuleResult:
        return forbidden(kw, output, "the output")

    return check


def _regex_match(value: str) -> Check:
    rx = parse_regex(value)

    def check(output: str, _: float | None) -> RuleResult:
        hit = rx.search(output)
        if rx.negate:
            if hit is not None:
                return triggered(f"the output matches the forbidden pattern: {hit[:80]!r}")
            return passed("the output does not match the forbidden pattern")
        if hit is None:
            return triggered("the output does not match the pattern")
        return passed(f"the output matches: {hit[:80]!r}")

    return check


_LENGTH = re.compile(
    r"(?:(max|maximum|at most|up to|<=?|min|minimum|at least|>=?)\s*)?(\d{1,9})"
    r"(?:\s*(?:-|to|\.\.)\s*(\d{1,9}))?\s*(chars?|characters?|words?)?",
    re.IGNORECASE,
)


def _length_limit(value: str) -> Check:
    m = _LENGTH.fullmatch(value.strip())
    if m is None:
        raise ValueProblem(
            'write a maximum ("500", "max 500 characters", "200 words"), a minimum '
            '("min 20") or a range ("20-500")'
        )
    word, a, b, unit = m.group(1), int(m.group(2)), m.group(3), (m.group(4) or "c").lower()
    lo, hi = (0.0, float(a)) if b is None else (float(a), float(b))
    if b is None and word and word.lower().startswith(("min", "at least", ">")):
        lo, hi = float(a), math.inf
    if lo > hi:
        raise ValueProblem(f"the range {a}-{b} is empty: the minimum is above the maximum")
    words = unit.startswith("w")
    label = "words" if words else "characters"

    def check(output: str, _: float | None) -> RuleResult:
        n = len(output.split()) if words else len(output)
        if n > hi:
            return triggered(f"the output has {n} {label}, more than {hi:g}")
        if n < lo:
            return triggered(f"the output has {n} {label}, fewer than {lo:g}")
        return passed(f"the output has {n} {label}")

    return check


_THRESHOLD = re.compile(r"(?:(?:min|minimum|at least|>=?)\s*)?(\d+(?:\.\d+)?|\.\d+)\s*(%)?", re.I)


def _confidence_threshold(value: str) -> Check:
    m = _THRESHOLD.fullmatch(value.strip())
    if m is None:
        raise ValueProblem('write the lowest acceptable confidence: "0.8" or "80%"')
    threshold = float(m.group(1))
    if not m.group(2) and threshold > 1 and not threshold.is_integer():
        # "80" reads as 80 %, but "1.5" is neither a fraction nor a plausible percentage.
        raise ValueProblem("the threshold must be between 0 and 1 (or 0% and 100%)")
    if m.group(2) or threshold > 1:
        threshold /= 100
    if not 0 <= threshold <= 1:
        raise ValueProblem("the threshold must be between 0 and 1 (or 0% and 100%)")

    def check(_: str, confidence: float | None) -> RuleResult:
        if confidence is None:
            return triggered("the log reports no confidence to compare with the threshold")
        if confidence < threshold:
            return triggered(f"confidence {confidence:g} is below {threshold:g}")
        return passed(f"confidence {confidence:g} is at least {threshold:g}")

    return check


def _llm_judge(value: str) -> None:
    if len(value) > MAX_CRITERION_CHARS:
        raise ValueProblem(f"the criterion is longer than {MAX_CRITERION_CHARS} characters")


_BUILDERS: dict[str, Callable[[str], Check | None]] = {
    "keyword_required": _keyword_required,
    "keyword_forbidden": _keyword_forbidden,
    "regex_match": _regex_match,
    "length_limit": _length_limit,
    "confidence_threshold": _confidence_threshold,
    "llm_judge": _llm_judge,
    "json_field": json_field,
    "json_field_keyword_required": json_keywords(True),
    "json_field_keyword_forbidden": json_keywords(False),
}


# -- the verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    status: Literal["pass", "flagged", "error"]
    confidence: float
    explanation: str


def combine(results: Sequence[tuple[str, RuleResult]]) -> Verdict:
    """(rule name, result) of every applied rule → the log's verdict: flagged when one
    triggered, else error when one could not be evaluated, else pass."""
    triggered = [(n, r) for n, r in results if r.outcome == "triggered"]
    errors = [(n, r) for n, r in results if r.outcome == "error"]
    if triggered:
        text = "; ".join(f"{n}: {r.explanation}" for n, r in triggered)
        if errors:
            text += "; could not evaluate " + ", ".join(n for n, _ in errors)
        return Verdict("flagged", round(max(r.confidence for _, r in triggered), 4), text)
    if errors:
        text = "; ".join(f"{n}: {r.explanation}" for n, r in errors)
        return Verdict("error", 0.0, text)
    if not results:
        return Verdict("pass", 1.0, "No active rule applies to this log")
    confidence = min(r.confidence for _, r in results)
    text = "The rule passed" if len(results) == 1 else f"All {len(results)} rules passed"
    return Verdict("pass", round(confidence, 4), text)


class RuleEngine:
    """The rules as the logs API uses them (handed over by the registry)."""

    types: tuple[str, ...] = RULE_TYPES
    providers: tuple[str, ...] = JUDGE_PROVIDERS

    def compile(self, rule_type: str, value: Any) -> CompiledRule:
        return compile_rule(rule_type, value)

    def result(self, outcome: str, explanation: str, confidence: float = 1.0) -> RuleResult:
        if outcome not in ("passed", "triggered", "error"):
            raise ValueError(f"unknown outcome {outcome!r}")
        return RuleResult(outcome, explanation, confidence)  # type: ignore[arg-type]

    def combine(self, results: Sequence[tuple[str, Any]]) -> Verdict:
        return combine(results)
