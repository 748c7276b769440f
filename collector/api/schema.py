"""JSON Schema (the subset the route definitions use) as data, and checking a value against it.

`collector/api/routes.py` checks every request's parameters and body with `problems()` before
a handler runs; `collector/api/openapi.py` publishes the same schemas, so the two cannot drift.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

Schema = dict[str, Any]

# The keywords `problems` understands; a schema using another one would be published but not
# checked, so `check_supported` refuses it when the routes are built.
SUPPORTED = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "enum", "const",
        "minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength", "maxItems",
        "minItems", "maxProperties", "minProperties", "anyOf", "description", "format",
        "examples", "default", "pattern",
    }
)  # fmt: skip
_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


# -- building schemas -------------------------------------------------------------------------


def string(
    max_length: int | None = None, *, min_length: int = 0, blank: bool = True, **more: Any
) -> Schema:
    """A string; `blank=False` needs a character other than white space."""
    s: Schema = {"type": "string", **more}
    if not blank:
        s["pattern"] = "\\S"
    if max_length is not None:
        s["maxLength"] = max_length
    if min_length:
        s["minLength"] = min_length
    return s


def integer(minimum: int | None = None, maximum: int | None = None, **more: Any) -> Schema:
    s: Schema = {"type": "integer", **more}
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    return s


def number(minimum: float | None = None, maximum: float | None = None, **more: Any) -> Schema:
    s: Schema = {"type": "number", **more}
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    return s


def boolean(**more: Any) -> Schema:
    return {"type": "boolean", **more}


def const(value: Any, **more: Any) -> Schema:
    return {"const": value, **more}


def enum(values: Sequence[str], **more: Any) -> Schema:
    return {"type": "string", "enum": list(values), **more}


def array(items: Schema, max_items: int | None = None, **more: Any) -> Schema:
    s: Schema = {"type": "array", "items": items, **more}
    if max_items is not None:
        s["maxItems"] = max_items
    return s


def nullable(s: Schema) -> Schema:
    """`s` or null (OpenAPI 3.1 spells it as a type list)."""
    kind = s.get("type")
    if isinstance(kind, str):
        return {**s, "type": [kind, "null"]}
    return {"anyOf": [s, {"type": "null"}]}


def obj(
    properties: Mapping[str, Schema],
    required: Sequence[str] = (),
    *,
    extra: bool | Schema = True,
    nulls: bool = True,
    **more: Any,
) -> Schema:
    """An object; `extra=False` refuses unknown fields, a schema checks their values. With
    `nulls`, an optional field may also be null (read as absent, as the handlers do)."""
    props = {
        k: nullable(v) if nulls and k not in required and not _null_allowed(v) else v
        for k, v in properties.items()
    }
    s: Schema = {"type": "object", "properties": props, **more}
    if required:
        s["required"] = list(required)
    if extra is not True:
        s["additionalProperties"] = extra
    return s


def any_of(*choices: Schema, **more: Any) -> Schema:
    return {"anyOf": list(choices), **more}


def check_supported(schema: Any, where: str) -> None:
    """Raise if `schema` uses a keyword that `problems` would silently ignore."""
    if not isinstance(schema, dict):
        return
    unknown = set(schema) - SUPPORTED
    if unknown:
        raise ValueError(f"{where}: unsupported schema keywords {sorted(unknown)}")
    for name, sub in (schema.get("properties") or {}).items():
        check_supported(sub, f"{where}.{name}")
    for key in ("items", "additionalProperties"):
        check_supported(schema.get(key), f"{where}.{key}")
    for i, sub in enumerate(schema.get("anyOf") or []):
        check_supported(sub, f"{where}.anyOf[{i}]")


# -- checking values --------------------------------------------------------------------------


def type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    for name, kind in _TYPES.items():
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _matches_type(value: Any, kind: str) -> bool:
    actual = type_of(value)
    return actual == kind or (kind == "number" and actual == "integer")


def problems(value: Any, schema: Schema, field: str = "") -> list[dict[str, str]]:
    """Every way `value` breaks `schema`, as the 422's `{"field", "message"}` entries (a field
    is a path such as `checkpoints[0].name`; the body itself is `body`)."""
    out: list[dict[str, str]] = []
    _check(value, schema, field, out)
    return out


def _name(field: str) -> str:
    return field or "body"


def _check(value: Any, schema: Schema, field: str, out: list[dict[str, str]]) -> None:
    if "anyOf" in schema:
        if not any(not problems(value, choice, field) for choice in schema["anyOf"]):
            kinds = [c.get("type") for c in schema["anyOf"]]
            shown = " or ".join(
                str(k) if isinstance(k, str) else " or ".join(map(str, k or ["a valid value"]))
                for k in kinds
            )
            out.append({"field": _name(field), "message": f"must be {shown}"})
        return
    declared = schema.get("type")
    if declared is not None:
        allowed = [declared] if isinstance(declared, str) else list(declared)
        if not any(_matches_type(value, k) for k in allowed):
            out.append({"field": _name(field), "message": f"must be {' or '.join(allowed)}"})
            return
    if "const" in schema and value != schema["const"]:
        out.append({"field": _name(field), "message": f"must be {json.dumps(schema['const'])}"})
    if "enum" in schema and value not in schema["enum"]:
        shown = ", ".join("null" if v is None else str(v) for v in schema["enum"])
        out.append({"field": _name(field), "message": f"must be one of {shown}"})
        return
    if isinstance(value, str):
        _check_string(value, schema, field, out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(value, schema, field, out)
    elif isinstance(value, list):
        _check_array(value, schema, field, out)
    elif isinstance(value, dict):
        _check_object(value, schema, field, out)


def _check_string(value: str, schema: Schema, field: str, out: list[dict[str, str]]) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        out.append(
            {"field": _name(field), "message": f"must be at most {schema['maxLength']} characters"}
        )
    if "minLength" in schema and len(value) < schema["minLength"]:
        message = "must not be empty" if schema["minLength"] == 1 else "is too short"
        out.append({"field": _name(field), "message": message})
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        out.append({"field": _name(field), "message": f"must match {schema['pattern']}"})


def _check_number(value: float, schema: Schema, field: str, out: list[dict[str, str]]) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        out.append({"field": _name(field), "message": "must be a finite number"})
        return
    low, high = schema.get("minimum"), schema.get("maximum")
    above = schema.get("exclusiveMinimum")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"from {low} to {high}" if low is not None and high is not None else None
        bounds = bounds or (f">= {low}" if low is not None else f"<= {high}")
        out.append({"field": _name(field), "message": f"must be {bounds}"})
    elif above is not None and value <= above:
        out.append({"field": _name(field), "message": f"must be > {above}"})


def _check_array(value: list[Any], schema: Schema, field: str, out: list[dict[str, str]]) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        out.append({"field": _name(field), "message": f"at most {schema['maxItems']} items"})
        return
    if "minItems" in schema and len(value) < schema["minItems"]:
        out.append({"field": _name(field), "message": f"at least {schema['minItems']} items"})
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _check(item, items, f"{field}[{i}]", out)


def _check_object(
    value: dict[str, Any], schema: Schema, field: str, out: list[dict[str, str]]
) -> None:
    props: dict[str, Schema] = schema.get("properties") or {}
    prefix = f"{field}." if field else ""
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        out.append({"field": _name(field), "message": f"at most {schema['maxProperties']} entries"})
        return
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        out.append(
            {"field": _name(field), "message": f"at least {schema['minProperties']} entries"}
        )
    required = schema.get("required") or ()
    for name in required:
        if name not in value or (value[name] is None and not _null_allowed(props.get(name))):
            out.append({"field": f"{prefix}{name}", "message": "is required"})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        sub = props.get(name)
        if sub is not None:
            if item is None and name in required:
                continue  # reported above
            _check(item, sub, f"{prefix}{name}", out)
        elif extra is False:
            out.append({"field": f"{prefix}{name}", "message": "is not a known field"})
        elif isinstance(extra, dict):
            _check(item, extra, f"{prefix}{name}", out)


def _null_allowed(schema: Schema | None) -> bool:
    if schema is None:
        return False
    kinds = schema.get("type")
    if kinds == "null" or (isinstance(kinds, list) and "null" in kinds):
        return True
    return any(_null_allowed(c) for c in schema.get("anyOf") or [])
