"""The vocabulary shared by the logs modules: the rule engine's shape (built by the registry
from `processors/output_rules/engine.py`), the redactor hook and the decision/verdict enums.

`logs_api`, `logs_eval` and `logs_runs` type against these Protocols; the service hands in the
real objects, so nothing in collector/ imports processors/.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from collector.model import Redactor

__all__ = ["DECISIONS", "STATUSES", "CompiledRuleLike", "Redactor", "RuleEngine", "RuleResultLike"]

STATUSES = ("pending", "pass", "flagged", "error")
DECISIONS = ("approved", "rejected")


class RuleResultLike(Protocol):
    @property
    def outcome(self) -> str: ...  # passed | triggered | error

    @property
    def explanation(self) -> str: ...

    @property
    def confidence(self) -> float: ...


class CompiledRuleLike(Protocol):
    @property
    def is_judge(self) -> bool: ...

    def evaluate(self, output: str, confidence: float | None = None) -> RuleResultLike: ...


class VerdictLike(Protocol):
    @property
    def status(self) -> str: ...  # pass | flagged | error

    @property
    def confidence(self) -> float: ...

    @property
    def explanation(self) -> str: ...


class RuleEngine(Protocol):
    """Compiles a rule's value (ValueError saying what is wrong) and combines results."""

    types: tuple[str, ...]
    providers: tuple[str, ...]

    def compile(self, rule_type: str, value: Any) -> CompiledRuleLike: ...

    def result(self, outcome: str, explanation: str, confidence: float = 1.0) -> RuleResultLike: ...

    def combine(self, results: Sequence[tuple[str, Any]]) -> VerdictLike: ...
