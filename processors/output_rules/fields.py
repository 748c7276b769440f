"""The JSON-field output rules: `json_field` (fields present, optionally with a value) and
`json_field_keyword_required` / `_forbidden` (keywords in one field's text).

`processors/output_rules/engine.py` builds these from a rule's value; the output's JSON is found and
read with `processors/output_rules/json_path.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from processors.output_rules.json_path import (
    PathError,
    Step,
    as_text,
    extract_json,
    format_path,
    is_missing,
    parse_path,
    resolve,
)
from processors.output_rules.text import (
    Check,
    RuleResult,
    ValueProblem,
    forbidden,
    parse_keywords,
    passed,
    required,
    triggered,
)


def _split_outside(text: str, seps: str) -> list[str]:
    """`text` split at any of `seps` that is not inside [...] or quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(text):
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "[":
            depth += 1
        elif c == "]":
            depth = max(0, depth - 1)
        elif c in seps and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _path(text: str) -> tuple[Step, ...]:
    try:
        return parse_path(text)
    except PathError as e:
        raise ValueProblem(str(e)) from e


def _expected(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _equal(actual: Any, expected: Any) -> bool:
    """Text compares case-insensitively (and `5` equals "5"); true/false/null/numbers exactly."""
    if isinstance(expected, str):
        return as_text(actual).strip().casefold() == expected.strip().casefold()
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    return bool(actual == expected)


def json_field(value: str) -> Check:
    checks: list[tuple[tuple[Step, ...], Any, bool]] = []
    for entry in _split_outside(value.replace("\n", ","), ","):
        if not entry.strip():
            continue
        path_text, eq, expected = _split_eq(entry)
        checks.append((_path(path_text), _expected(expected.strip()) if eq else None, eq))
    if not checks:
        raise ValueProblem('name at least one field, e.g. "customer.email" or "status = approved"')

    def check(output: str, _: float | None) -> RuleResult:
        try:
            doc = extract_json(output)
        except ValueError as e:
            return triggered(str(e))
        for steps, expected, has_expected in checks:
            found = resolve(doc, steps)
            name = format_path(steps)
            if is_missing(found) or found is None or found in ("", []):
                return triggered(f"field {name} is missing or empty")
            if has_expected and not _equal(found, expected):
                return triggered(f"field {name} is {as_text(found)[:80]!r}, not {expected!r}")
        return passed("every field is present" + (" with its value" if checks[0][2] else ""))

    return check


def _split_eq(entry: str) -> tuple[str, bool, str]:
    parts = _split_outside(entry, "=")
    if len(parts) == 1:
        return entry, False, ""
    path = parts[0].rstrip("=").strip()
    rest = "=".join(parts[1:]).lstrip("=")
    if not rest.strip():
        raise ValueProblem(f"{entry.strip()!r}: nothing after = (write field = value)")
    return path, True, rest


def json_keywords(must: bool) -> Callable[[str], Check]:
    """`must`: the keywords are required in the field (else forbidden)."""

    def build(value: str) -> Check:
        parts = _split_outside(value, ":")
        if len(parts) < 2 or not parts[0].strip():
            raise ValueProblem(
                'write the field, a colon and the keywords, e.g. "reply.text: refund, sorry"'
            )
        steps = _path(parts[0])
        kw = parse_keywords(":".join(parts[1:]))
        name = format_path(steps)

        def check(output: str, _: float | None) -> RuleResult:
            try:
                doc = extract_json(output)
            except ValueError as e:
                return triggered(str(e))
            found = resolve(doc, steps)
            if is_missing(found) or found is None:
                if must:
                    return triggered(f"field {name} is missing")
                return passed(f"field {name} is absent")
            text = as_text(found)
            where = f"field {name}"
            return required(kw, text, where) if must else forbidden(kw, text, where)

        return check

    return build
