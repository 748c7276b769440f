"""Generic config machinery: YAML text → `${env:…}`-expanded data → typed, frozen dataclasses.

`collector/config.py` uses it for the top-level schema and the registry for each component's own
config; every problem becomes a `ConfigIssue` with its YAML path, so one run reports them all.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

T = TypeVar("T")


class _Invalid:
    """No usable value: the problem is already recorded, the caller falls back to a default."""


INVALID = _Invalid()

FieldParser = Callable[[object, str, list["ConfigIssue"]], object]
"""A field's own parser, set as `field(metadata={"parser": fn})`: (raw, path, errors) → value,
or `INVALID` (after recording why) to fall back to the field's default."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in the config, at its YAML path (`storage.commit_interval_ms`, `a.b[0].c`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


class ConfigError(Exception):
    """The config is unusable; `issues` lists every problem found, one per line in `str()`."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("\n".join(str(issue) for issue in issues))
        self.issues = issues


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def bounds(ge: float | None = None, le: float | None = None) -> dict[str, float]:
    """Field metadata for a numeric range check: `field(default=2, metadata=bounds(ge=0))`."""
    return {k: v for k, v in (("ge", ge), ("le", le)) if v is not None}


def redact(text: str) -> str:
    """Shorten a value for a message; anything shaped like an API key shows 12 chars at most."""
    if text.startswith("al_") and len(text) > 12:
        return text[:12] + "…"
    return text if len(text) <= 60 else text[:57] + "…"


def describe(value: object) -> str:
    """How a YAML value reads in a message: `'fast'`, `true`, `null`, `a list`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(redact(str(value)))
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def suggest(word: str, options: list[str]) -> str | None:
    lowered = {o.lower(): o for o in options}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


# --- YAML ---------------------------------------------------------------------------------------


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str | float) -> float:
    """A Go duration as the OpenTelemetry Collector writes them ("200ms", "1m30s", "0s") in
    seconds; a bare number is seconds. ValueError with the accepted forms otherwise."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a duration must not be negative, got {text}")
        return float(text)
    s = str(text).strip()
    parts = _DURATION.findall(s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"expected a duration like 200ms, 5s or 1m30s, got {text!r}")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


class Expanded(str):
    """A string with `${env:…}` text substituted into it, so not a quoting mistake of the user's."""

    __slots__ = ()


class EnvStr(Expanded):
    """A string that was, in its entirety, one `${env:…}` reference.

    An environment variable cannot carry a YAML type, so int, float and bool fields accept such a
    string when it spells one ("4317", "true"), and an empty one means null for `X | None` fields.
    A literal quoted "4317" in the file, or "4317${env:X}", stays a string and is a type error.
    """

    __slots__ = ()


_INT = re.compile(r"[+-]?[0-9]+")
_BOOLS = {"true": True, "false": False}


def parse_dataclass(cls: type[T], raw: object, path: str, errors: list[ConfigIssue]) -> T:
    """Build dataclass `cls` from YAML data at `path`, appending one ConfigIssue per problem.

    Supports str, int, float (ints accepted), bool, `X | None`, list[X], dict[str, X],
    Literal[...], nested dataclasses and Any. A missing field takes its default (no default:
    "required"); a field whose value is wrong also falls back to its default so checking goes on.
    `null` — a key with no value, like the OTel Collector's `grpc:` — means "all defaults" for a
    dataclass-typed field and None for another `X | None`; for any other field it is an error.
    A string that was wholly one `${env:…}` reference also converts to int, float or bool (see
    `EnvStr`). Numeric ranges come from `bounds()` metadata. Once built, `validate()` (if
    defined) runs unless a required field was unusable; it returns messages (recorded at `path`)
    or ConfigIssues (their path taken relative to `path`).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        _mismatch("a mapping", raw, path, errors)
        return _placeholder(cls)  # type: ignore[return-value]
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    names = [f.name for f in fields]
    for key in raw:
        if not isinstance(key, str):
            errors.append(_key_not_str(key, path))
        elif key not in names:
            hint = suggest(str(key), names)
            also = f"; did you mean {hint!r}?" if hint else ""
            message = f"unknown key (expected one of: {', '.join(names)}{also})"
            errors.append(ConfigIssue(join(path, redact(str(key))), message))

    hints = get_type_hints(cls)
    kwargs: dict[str, object] = {}
    complete = True
    for f in fields:
        fpath = join(path, f.name)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        value: object = INVALID
        if f.name in raw:
            parser: FieldParser | None = f.metadata.get("parser")
            if parser is not None:
                value = parser(raw[f.name], fpath, errors)
            else:
                value = _parse_value(hints[f.name], raw[f.name], fpath, errors)
            value = _check_bounds(f.metadata, value, fpath, errors)
        elif required:
            errors.append(ConfigIssue(fpath, "required"))
        if value is not INVALID:
            kwargs[f.name] = value
        elif required:
            kwargs[f.name] = _placeholder(hints[f.name])
            complete = False
    try:
        obj = cls(**kwargs)
    except ValueError as e:
        # A component that checks itself on construction: report it like validate() would,
        # and go on with the defaults so the rest of the file is still checked.
        message = str(e)
        prefix = f"{path.rsplit('.', 1)[-1].split('/', maxsplit=1)[0]}."
        for part in (prefix, f"{path}: ", f"{path}."):
            message = message.removeprefix(part)
        errors.append(ConfigIssue(path, message))
        own = dataclasses.fields(cls)  # type: ignore[arg-type]
        return cls() if all(_has_default(f) for f in own) else cast(T, None)
    validate = getattr(obj, "validate", None)
    if complete and callable(validate):
        for item in validate():
            if isinstance(item, ConfigIssue):
                errors.append(ConfigIssue(join(path, item.path), item.message))
            else:
                errors.append(ConfigIssue(path, str(item)))
    return obj


def _parse_value(tp: Any, raw: object, path: str, errors: list[ConfigIssue]) -> object:
    if tp is Any or tp is object:
        return raw
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union or origin is types.UnionType:
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1 or len(args) != 2:
            raise TypeError(f"config fields support only `X | None` unions, not {tp!r}")
        if raw is None and not dataclasses.is_dataclass(inner[0]):
            return None
        if isinstance(raw, EnvStr) and raw == "":
            return None
        return _parse_value(inner[0], raw, path, errors)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if raw is not None and not isinstance(raw, Mapping):
            return _mismatch("a mapping", raw, path, errors)
        return parse_dataclass(tp, raw, path, errors)
    if origin is Literal:
        for option in args:
            # `==` alone would let True match 1 and 1 match 1.0; the kinds must agree too.
            kinds = (isinstance(raw, str), isinstance(raw, bool))
            if raw == option and kinds == (isinstance(option, str), isinstance(option, bool)):
                return option
        options = [str(o) for o in args]
        hint = suggest(str(raw), options) if isinstance(raw, str) else None
        also = f"; did you mean {hint!r}?" if hint else ""
        errors.append(
            ConfigIssue(path, f"expected one of: {', '.join(options)}; got {describe(raw)}{also}")
        )
        return INVALID
    if origin is list:
        if not isinstance(raw, list):
            return _mismatch("a list", raw, path, errors)
        items = [_parse_value(args[0], v, f"{path}[{i}]", errors) for i, v in enumerate(raw)]
        return [item for item in items if item is not INVALID]
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"config mappings must have str keys, not {tp!r}")
        if not isinstance(raw, Mapping):
            return _mismatch("a mapping", raw, path, errors)
        out: dict[str, object] = {}
        for key, v in raw.items():
            if not isinstance(key, str):
                errors.append(_key_not_str(key, path))
                continue
            item = _parse_value(args[1], v, join(path, key), errors)
            if item is not INVALID:
                out[key] = item
        return out
    if tp in (bool, int, float, str):
        return _parse_scalar(tp, raw, path, errors)
    raise TypeError(f"unsupported config field type {tp!r}")


def _key_not_str(key: object, path: str) -> ConfigIssue:
    # YAML 1.1 reads unquoted on/off/yes/no as booleans, so `on:` arrives as True.
    return ConfigIssue(join(path, str(key)), f"key {describe(key)} is not a string (quote it)")


def _parse_scalar(tp: type, raw: object, path: str, errors: list[ConfigIssue]) -> object:
    # bool is an int subclass in Python; YAML `true` must not pass as 1, nor 1 as true.
    text = str(raw).strip() if isinstance(raw, str) else None
    if tp is str:
        return str(raw) if isinstance(raw, str) else _mismatch("a string", raw, path, errors)
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, EnvStr) and text is not None and text.lower() in _BOOLS:
            return _BOOLS[text.lower()]
        quoted = text is not None and text.lower() in _BOOLS
        return _mismatch("a boolean (true or false)", raw, path, errors, quoted)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw if tp is int else float(raw)
    if tp is int:
        if isinstance(raw, EnvStr) and text is not None and _INT.fullmatch(text):
            return int(text)
        quoted = text is not None and _INT.fullmatch(text) is not None
        return _mismatch("an integer", raw, path, errors, quoted)
    number = _to_float(text) if text is not None else raw
    if isinstance(raw, EnvStr | float) and isinstance(number, float):
        if math.isfinite(number):
            return number
        errors.append(ConfigIssue(path, f"expected a finite number, got {describe(raw)}"))
        return INVALID
    return _mismatch("a number", raw, path, errors, isinstance(number, float))


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _mismatch(
    expected: str, raw: object, path: str, errors: list[ConfigIssue], quoted: bool = False
) -> _Invalid:
    hint = ""
    if quoted and type(raw) is str:
        hint = " (a quoted string; remove the quotes)"
    elif quoted and type(raw) is Expanded:
        hint = " (only a value that is exactly one ${env:...} reference is converted)"
    errors.append(ConfigIssue(path, f"expected {expected}, got {describe(raw)}{hint}"))
    return INVALID


def _check_bounds(
    metadata: Mapping[str, Any], value: object, path: str, errors: list[ConfigIssue]
) -> object:
    ge, le = metadata.get("ge"), metadata.get("le")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return value
    if (ge is not None and value < ge) or (le is not None and value > le):
        rule = f">= {ge}" if le is None else f"<= {le}" if ge is None else f"between {ge} and {le}"
        errors.append(ConfigIssue(path, f"must be {rule}, got {value}"))
        return INVALID
    return value


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _placeholder(tp: Any) -> object:
    """A stand-in for a required field that had no usable value: the result is never returned
    to a caller of the loader (the ConfigError is), it only lets checking continue."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return args[0]
    if origin is Union or origin is types.UnionType or tp is Any or tp is object:
        return None
    if origin is list or origin is dict:
        return origin()
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        fields = dataclasses.fields(tp)
        hints = get_type_hints(tp)
        return tp(
            **{
                f.name: _placeholder(hints[f.name])
                for f in fields
                if f.init
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            }
        )
    return tp()


# --- host:port endpoints -----------------------------------------------------------------------


_ENDPOINT = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[A-Za-z0-9._-]+)):(?P<port>[0-9]{1,5})")


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host without brackets, port); ValueError says what's wrong."""
    m = _ENDPOINT.fullmatch(endpoint)
    if m is None:
        raise ValueError(f"expected host:port (IPv6 as [::1]:4317), got {describe(endpoint)}")
    if m["v6"] is not None:
        try:
            ipaddress.IPv6Address(m["v6"])
        except ValueError:
            raise ValueError(f"{m['v6']!r} in brackets is not an IPv6 address") from None
    port = int(m["port"])
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0-65535; 0 picks a free port)")
    return m["v6"] or m["host"], port


def endpoint_issues(name: str, endpoint: str) -> list[ConfigIssue]:
    try:
        split_endpoint(endpoint)
    except ValueError as e:
        return [ConfigIssue(name, str(e))]
    return []
