"""Keyword lists and regular expressions of output rules, as a no-code user writes them, and
the result a rule gives (passed / triggered / error, with why).

`processors/output_rules/engine.py` parses a rule's `value` with these once (when the rule is
created or loaded) and matches outputs with the compiled forms; pure, and linear in the output's
length.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import re2

MAX_KEYWORDS = 200
MAX_KEYWORD_CHARS = 200
MAX_REGEX_CHARS = 2000
REGEX_MAX_MEM = 8 << 20  # RE2's memory budget for one compiled pattern


Outcome = Literal["passed", "triggered", "error"]


class ValueProblem(ValueError):
    """A rule value a user wrote that we cannot use; the message says what to write instead."""


@dataclass(frozen=True)
class Keywords:
    """A parsed keyword list. `mode` "all": every keyword must appear (required rules);
    "any": at least one (a value starting with `any:`)."""

    words: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]
    mode: str = "all"

    def found(self, text: str) -> list[str]:
        return [w for w, p in zip(self.words, self.patterns, strict=True) if p.search(text)]

    def missing(self, text: str) -> list[str]:
        return [w for w, p in zip(self.words, self.patterns, strict=True) if not p.search(text)]


def _keyword_pattern(word: str) -> re.Pattern[str]:
    # An escaped literal (plus `\w*` for a `*` wildcard): no backtracking blow-up is possible.
    parts = [re.escape(p) for p in word.split("*")]
    core = r"\w*".join(parts)
    core = re.sub(r"(?:\\\s)+|\s+", r"\\s+", core)
    head = r"(?<!\w)" if re.match(r"\w|\*", word) else ""
    tail = r"(?!\w)" if re.search(r"(\w|\*)$", word) else ""
    return re.compile(head + core + tail, re.IGNORECASE)


def parse_keywords(value: str) -> Keywords:
    """`refund, "thank you, sir", order*` or one keyword a line; `any:` in front means at
    least one of them. Case-insensitive, whole words (`*` at an end matches a word's rest)."""
    text = value.strip()
    mode = "all"
    if text.lower().startswith("any:"):
        mode, text = "any", text[4:]
    elif text.lower().startswith("all:"):
        text = text[4:]
    words: list[str] = []
    for line in text.splitlines():
        try:
            cells = next(csv.reader([line], skipinitialspace=True), [])
        except csv.Error as e:
            raise ValueProblem(f"cannot read the keyword list: {e}") from e
        for cell in cells:
            word = " ".join(cell.split())
            if word and word.lower() not in (w.lower() for w in words):
                words.append(word)
    if not words:
        raise ValueProblem(
            'give at least one keyword, e.g. "refund, apology" (comma- or newline-separated)'
        )
    if len(words) > MAX_KEYWORDS:
        raise ValueProblem(f"at most {MAX_KEYWORDS} keywords, got {len(words)}")
    for word in words:
        if len(word) > MAX_KEYWORD_CHARS:
            raise ValueProblem(f"keyword {word[:30]!r}… is longer than {MAX_KEYWORD_CHARS} chars")
        if not word.strip("*"):
            raise ValueProblem("a keyword cannot be only *")
    return Keywords(tuple(words), tuple(_keyword_pattern(w) for w in words), mode)


@dataclass(frozen=True)
class Regex:
    """A user's pattern compiled by RE2 (linear time: no input can make it hang).

    `negate`: the value started with `!`, so the output must NOT match."""

    source: str
    compiled: Any  # re2's compiled pattern (the package ships no type hints)
    negate: bool = False

    def search(self, text: str) -> str | None:
        m = self.compiled.search(text)
        return None if m is None else str(m.group(0))


_SLASHED = re.compile(r"/(.*)/([a-z]*)", re.DOTALL)


def parse_regex(value: str) -> Regex:
    """`^ORD-\\d{6}$`, or `/pattern/flags` with flags i (ignore case), m (multi-line), s (dot
    matches newline); a leading `!` means the output must not match."""
    text = value.strip()
    negate = text.startswith("!")
    if negate:
        text = text[1:].strip()
    flags = ""
    m = _SLASHED.fullmatch(text)
    if m:
        text, flags = m.group(1), m.group(2)
        bad = sorted(set(flags) - set("ims"))
        if bad:
            raise ValueProblem(f"unknown regex flag {''.join(bad)!r}; use i, m or s")
    if not text:
        raise ValueProblem("the regular expression is empty")
    if len(text) > MAX_REGEX_CHARS:
        raise ValueProblem(f"the regular expression is longer than {MAX_REGEX_CHARS} characters")
    options = re2.Options()
    options.log_errors = False
    options.max_mem = REGEX_MAX_MEM
    options.case_sensitive = "i" not in flags
    options.dot_nl = "s" in flags
    pattern = f"(?m){text}" if "m" in flags else text
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as e:
        reason = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueProblem(
            f"invalid regular expression: {reason} (RE2 syntax: no back-references or look-arounds)"
        ) from e
    return Regex(value.strip(), compiled, negate)


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleResult:
    outcome: Outcome
    explanation: str
    confidence: float = 1.0  # deterministic rules are certain; a judge says how sure it is

    @property
    def triggered(self) -> bool:
        return self.outcome == "triggered"


def passed(why: str) -> RuleResult:
    return RuleResult("passed", why)


def triggered(why: str) -> RuleResult:
    return RuleResult("triggered", why)


Check = Callable[[str, float | None], RuleResult]
"""A compiled rule: (output, the log's confidence) → its result."""


def required(kw: Keywords, text: str, where: str) -> RuleResult:
    if kw.mode == "any":
        found = kw.found(text)
        if found:
            return passed(f"{where} contains {found[0]!r}")
        return triggered(f"{where} contains none of {_list(kw.words)}")
    missing = kw.missing(text)
    if missing:
        return triggered(f"{where} is missing {_list(missing)}")
    return passed(f"{where} contains {_list(kw.words)}")


def forbidden(kw: Keywords, text: str, where: str) -> RuleResult:
    found = kw.found(text)
    if found:
        return triggered(f"{where} contains forbidden {_list(found)}")
    return passed(f"{where} contains none of {_list(kw.words)}")


def _list(words: Sequence[str]) -> str:
    shown = ", ".join(repr(w) for w in words[:5])
    return shown + (f" and {len(words) - 5} more" if len(words) > 5 else "")
