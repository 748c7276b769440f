"""JSON paths for output rules: parse `customer.email`, `items[0].sku`, `$.a["b c"]` and find
the value they name in an AI output that is (or contains) a JSON document.

`processors/output_rules/engine.py` validates a rule's path with `parse_path` and reads outputs with
`extract_json` + `resolve`; pure functions over strings and parsed JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

Step = str | int
_NAME = re.compile(r"[^.\[\]\s]+")
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)
MAX_PATH_CHARS = 500
_MISSING = object()


class PathError(ValueError):
    """A JSON path that cannot be parsed; the message says where and why."""


def parse_path(text: str) -> tuple[Step, ...]:
    """`$.a.b`, `a.b`, `items[0].sku`, `items[-1]`, `a["key with spaces"]`, `['a.b']` → steps."""
    s = text.strip()
    if not s:
        raise PathError("the JSON path is empty")
    if len(s) > MAX_PATH_CHARS:
        raise PathError(f"the JSON path is longer than {MAX_PATH_CHARS} characters")
    if s.startswith("$"):
        s = s[1:]
        if s.startswith("."):
            s = s[1:]
    steps: list[Step] = []
    i, expect_name = 0, True
    while i < len(s):
        c = s[i]
        if c == "[":
            end = s.find("]", i)
            if c == "[" and i + 1 < len(s) and s[i + 1] in "'\"":
                quote = s[i + 1]
                close = s.find(quote + "]", i + 2)
                if close < 0:
                    raise PathError(f"unclosed quoted key at position {i + 1} of {text!r}")
                steps.append(s[i + 2 : close])
                i = close + 2
            elif end < 0:
                raise PathError(f"unclosed [ at position {i + 1} of {text!r}")
            else:
                inner = s[i + 1 : end].strip()
                if not re.fullmatch(r"-?\d{1,9}", inner):
                    raise PathError(
                        f"[{inner}] in {text!r} is not an array index; write [0], [1], … "
                        "or a quoted key such as ['name']"
                    )
                steps.append(int(inner))
                i = end + 1
            expect_name = False
        elif c == ".":
            if expect_name:
                raise PathError(f"empty name at position {i + 1} of {text!r} (two dots?)")
            expect_name = True
            i += 1
        else:
            m = _NAME.match(s, i)
            if m is None or not expect_name:
                raise PathError(f"unexpected {c!r} at position {i + 1} of {text!r}")
            steps.append(m.group(0))
            i = m.end()
            expect_name = False
    if expect_name and steps:
        raise PathError(f"{text!r} ends with a dot")
    if not steps:
        raise PathError("the JSON path names no field")
    return tuple(steps)


def extract_json(output: str) -> Any:
    """The JSON document in an output: the whole text, else a ```json fenced block, else the
    outermost {…} or […]. Raises ValueError when there is none."""
    text = output.strip()
    candidates = [text]
    fence = _FENCE.search(output)
    if fence:
        candidates.append(fence.group(1).strip())
    for open_, close in (("{", "}"), ("[", "]")):
        start, end = text.find(open_), text.rfind(close)
        if 0 <= start < end:
            candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            continue
    raise ValueError("the output is not JSON and contains no JSON object")


def resolve(doc: Any, steps: tuple[Step, ...]) -> Any:
    """The value at `steps`, or `MISSING` when a step does not exist."""
    current = doc
    for step in steps:
        if isinstance(step, int):
            if not isinstance(current, list) or not -len(current) <= step < len(current):
                return _MISSING
            current = current[step]
        elif isinstance(current, dict) and step in current:
            current = current[step]
        elif isinstance(current, list) and re.fullmatch(r"-?\d+", step):
            index = int(step)  # `items.0.sku` works like `items[0].sku`
            if not -len(current) <= index < len(current):
                return _MISSING
            current = current[index]
        else:
            return _MISSING
    return current


def is_missing(value: Any) -> bool:
    return value is _MISSING


def as_text(value: Any) -> str:
    """A field's value as the text keyword rules search: strings as they are, else JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def format_path(steps: tuple[Step, ...]) -> str:
    out = ""
    for step in steps:
        if isinstance(step, int):
            out += f"[{step}]"
        elif _NAME.fullmatch(step):
            out += ("." if out else "") + step
        else:
            out += f'["{step}"]'
    return out
