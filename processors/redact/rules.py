"""The redaction rules (config of `redact:`) and the engine that applies them to values.

`RedactConfig` comes from the YAML via the registry; `Redactor` applies it to attribute maps,
texts and JSON values, for `redact.py`'s batches and for the native JSON APIs' payloads.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from processors.redact.detect import DETECTORS

Action = Literal["mask", "drop", "hash"]
_DROP: Any = object()  # sentinel: remove this attribute / array element
_CACHE_MAX = 20_000
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True)
class RedactRule:
    """A named rule. `keys` alone: the whole value of attributes whose key matches a glob.
    `pattern`: every match of the regex in any value (only under `keys` when both are given)."""

    name: str
    keys: list[str] = field(default_factory=list)
    pattern: str | None = None
    action: Action = "mask"


@dataclass(frozen=True)
class RedactConfig:
    """`detectors`: built-ins to run (email, card, phone, iban, api_key) with
    `detector_action`. `allowed_keys` (globs): when set, every other attribute key is dropped.
    `blocked_keys`: attributes whose value gets `blocked_key_action`. `ignored_keys`: never
    scanned. `hash_key`: the HMAC key of `hash` (required when any rule hashes)."""

    detectors: list[str] = field(default_factory=lambda: list(DETECTORS))
    detector_action: Action = "mask"
    allowed_keys: list[str] = field(default_factory=list)
    blocked_keys: list[str] = field(default_factory=list)
    blocked_key_action: Action = "drop"
    ignored_keys: list[str] = field(default_factory=list)
    rules: list[RedactRule] = field(default_factory=list)
    hash_key: str | None = None
    mask: str = "[REDACTED:{rule}]"

    def validate(self) -> list[str]:
        problems = [f"detectors: unknown {d!r}" for d in self.detectors if d not in DETECTORS]
        names = [r.name for r in self.rules]
        for i, rule in enumerate(self.rules):
            where = f"rules[{i}]"
            if not rule.name or names.count(rule.name) > 1 or rule.name in DETECTORS:
                problems.append(f"{where}.name: must be non-empty, unique, not a detector's name")
            if not rule.keys and rule.pattern is None:
                problems.append(f"{where}: needs keys, pattern or both")
            if rule.pattern is not None:
                problems += [f"{where}.pattern: {p}" for p in _pattern_problems(rule.pattern)]
        actions = [r.action for r in self.rules] + [self.detector_action]
        actions += [self.blocked_key_action] if self.blocked_keys else []
        if "hash" in actions and (self.hash_key is None or len(self.hash_key) < 16):
            problems.append("hash_key: at least 16 characters are needed for the `hash` action")
        try:
            self.mask.format(rule="x")
        except (KeyError, IndexError, ValueError):
            problems.append("mask: the only placeholder allowed is {rule}")
        return problems


def _pattern_problems(pattern: str) -> list[str]:
    try:
        re.compile(pattern)
        # The batch prefilter runs the same pattern in RE2: it must mean the same there.
        pc.match_substring_regex(pa.array([""]), pattern)
    except (re.error, pa.ArrowInvalid) as e:
        return [f"invalid regex (must be valid in Python and RE2): {e}"]
    return []


def glob_regex(globs: list[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex matching any of the glob patterns (`*`, `?`, `[...]`)."""
    if not globs:
        return None
    return re.compile("|".join(fnmatch.translate(g) for g in globs), re.IGNORECASE)


def glob_prefilter(globs: list[str]) -> str | None:
    """An RE2 regex a JSON text must match for one of `globs` to occur in it as a key, or None
    when a glob has characters JSON escapes (then every row must be looked at)."""
    parts = []
    for g in globs:
        if any(c in g for c in '"\\[]') or any(ord(c) < 32 for c in g):
            return None
        pieces = [p for p in re.split(r"[*?]+", g) if p]
        parts.append(".*".join(re.escape(p) for p in pieces) or ".")
    return "(?i)" + "|".join(f"(?:{p})" for p in parts)


@dataclass(frozen=True)
class _ValueRule:
    name: str
    pattern: re.Pattern[str]
    prefilter: str
    action: Action
    keys: re.Pattern[str] | None = None
    valid: Callable[[str], bool] | None = None
    hints: tuple[str, ...] = ()


@dataclass(frozen=True)
class _KeyRule:
    name: str
    keys: re.Pattern[str]
    action: Action


@dataclass(frozen=True)
class _KeyPlan:
    """What happens to one attribute key, decided once per key and cached."""

    allowed: bool
    key_rule: _KeyRule | None
    value_rules: tuple[_ValueRule, ...]


class Redactor:
    """Applies a `RedactConfig`. Counts redactions per rule name in `counts` (never values) and,
    when given, reports each one to `on_redact(rule, n)` as well."""

    def __init__(
        self, config: RedactConfig, on_redact: Callable[[str, int], None] | None = None
    ) -> None:
        self._on_redact = on_redact
        self.counts: Counter[str] = Counter()
        self._key = (config.hash_key or "").encode()
        self._mask = config.mask
        self._allowed = glob_regex(config.allowed_keys)
        self._ignored = glob_regex(config.ignored_keys)
        self.key_rules: list[_KeyRule] = []
        if config.blocked_keys:
            keys = glob_regex(config.blocked_keys)
            assert keys is not None
            self.key_rules.append(_KeyRule("blocked_keys", keys, config.blocked_key_action))
        self.value_rules: list[_ValueRule] = []
        for name in config.detectors:
            d = DETECTORS[name]
            self.value_rules.append(
                _ValueRule(
                    name, d.pattern, d.prefilter, config.detector_action, None, d.valid, d.hints
                )
            )
        for rule in config.rules:
            keys = glob_regex(rule.keys)
            if rule.pattern is None and keys is not None:
                self.key_rules.append(_KeyRule(rule.name, keys, rule.action))
            elif rule.pattern is not None:
                compiled = re.compile(rule.pattern)
                self.value_rules.append(
                    _ValueRule(rule.name, compiled, rule.pattern, rule.action, keys)
                )
        self.key_globs = list(config.blocked_keys) + [g for r in config.rules for g in r.keys]
        self.restricts_keys = self._allowed is not None
        self._free_rules = tuple(r for r in self.value_rules if r.keys is None)
        self._plans: dict[tuple[str, str], _KeyPlan] = {}

    # -- the Redactor protocol (native payloads) -------------------------------------------

    def text(self, value: str, *, field: str) -> str:
        """A text field of a native payload; `field` is matched like an attribute key. A text
        holding a JSON object or array (MCP args) is redacted through its parsed value, so key
        rules reach its keys, and written back compactly if anything changed."""
        if value[:1] in ("{", "["):
            try:
                parsed = json.loads(value)
            except ValueError:
                pass  # e.g. cut to size: scanned as text below
            else:
                new = self.value(parsed, field=field)
                return value if new is parsed else _dumps(new)
        out = self._entry(field, field, value, top=False)
        if out is _DROP:
            return self._mask.format(rule="dropped")
        return out if isinstance(out, str) else str(out)

    def value(self, value: Any, *, field: str) -> Any:
        """A JSON value of a native payload (maps, arrays, numbers); None when dropped whole."""
        out = self._entry(field, field, value, top=False)
        return None if out is _DROP else out

    # -- batches ---------------------------------------------------------------------------

    def attributes(self, attrs: dict[str, Any], *, top: bool = True) -> dict[str, Any]:
        """An attribute map redacted; the same object when nothing changed."""
        return self._mapping(attrs, "", top)

    def scan(self, text: str) -> str:
        """A free text column (span name, excerpt): the unscoped value rules only; a `drop`
        rule that matches replaces the whole text by the mask."""
        out: str = self._scan(text, self._free_rules)
        return self._mask.format(rule="dropped") if out is _DROP else out

    def take_counts(self) -> Counter[str]:
        counts, self.counts = self.counts, Counter()
        return counts

    # -- the engine ------------------------------------------------------------------------

    def _plan(self, key: str, full: str) -> _KeyPlan:
        plan = self._plans.get((key, full))
        if plan is None:
            if len(self._plans) > _CACHE_MAX:
                self._plans.clear()

            def hit(rx: re.Pattern[str] | None) -> bool:
                return rx is not None and bool(rx.match(key) or rx.match(full))

            allowed = self._allowed is None or hit(self._allowed)
            key_rule = next((r for r in self.key_rules if hit(r.keys)), None)
            rules = () if hit(self._ignored) else tuple(
                r for r in self.value_rules if r.keys is None or hit(r.keys)
            )  # fmt: skip
            plan = self._plans[(key, full)] = _KeyPlan(allowed, key_rule, rules)
        return plan

    def _count(self, rule: str, n: int = 1) -> None:
        self.counts[rule] += n
        if self._on_redact is not None:
            self._on_redact(rule, n)

    def _mapping(self, m: dict[str, Any], path: str, top: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        changed = False
        for k, v in m.items():
            nv = self._entry(k, f"{path}.{k}" if path else k, v, top)
            if nv is not v:
                changed = True
            if nv is not _DROP:
                out[k] = nv
        return out if changed else m

    def _entry(self, key: str, full: str, v: Any, top: bool) -> Any:
        plan = self._plan(key, full)
        if top and not plan.allowed:
            self._count("allowed_keys")
            return _DROP
        if plan.key_rule is not None:
            rule = plan.key_rule
            self._count(rule.name)
            if rule.action == "drop":
                return _DROP
            if rule.action == "mask":
                return self._mask.format(rule=rule.name)
            return self._hash(v if isinstance(v, str) else repr(v))
        if not plan.value_rules:
            return v
        return self._value(v, full, plan)

    def _value(self, v: Any, path: str, plan: _KeyPlan) -> Any:
        if isinstance(v, str):
            return self._scan(v, plan.value_rules)
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, int | float):
            text = repr(v)
            out = self._scan(text, plan.value_rules)
            return v if out == text else out
        if isinstance(v, list):
            items = [self._value(x, path, plan) for x in v]
            if all(a is b for a, b in zip(items, v, strict=True)):
                return v
            return [x for x in items if x is not _DROP]
        if isinstance(v, dict):
            return self._mapping(v, path, False)
        return v

    def _scan(self, text: str, rules: tuple[_ValueRule, ...]) -> Any:
        for rule in rules:
            if rule.hints and not any(h in text for h in rule.hints):
                continue  # cheaper than the regex: none of the literals it needs is there
            if rule.action == "drop":
                if any(
                    rule.valid is None or rule.valid(m.group()) for m in rule.pattern.finditer(text)
                ):
                    self._count(rule.name)
                    return _DROP
                continue
            text = rule.pattern.sub(self._replacer(rule), text)
        return text

    def _replacer(self, rule: _ValueRule) -> Callable[[re.Match[str]], str]:
        def replace(m: re.Match[str]) -> str:
            found = m.group()
            if rule.valid is not None and not rule.valid(found):
                return found
            self._count(rule.name)
            return self._mask.format(rule=rule.name) if rule.action == "mask" else self._hash(found)

        return replace

    def _hash(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()
        return f"hmac:{digest[:32]}"
