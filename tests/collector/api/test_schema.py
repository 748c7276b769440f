"""The JSON Schema subset the route definitions use: every problem with its field path."""

from __future__ import annotations

from collector.api import schema as sc


def fields(value: object, schema: sc.Schema) -> list[str]:
    return [p["field"] for p in sc.problems(value, schema)]


def test_types_ranges_and_required() -> None:
    s = sc.obj({"a": sc.integer(0, 3), "b": sc.string(2), "c": sc.enum(("x",))}, ["a"])
    assert fields({"a": 1}, s) == []
    assert fields({"a": 1.0}, s) == []  # 1.0 is an integer in JSON Schema
    assert fields({"a": True}, s) == ["a"]  # a bool is not
    assert fields({}, s) == ["a"]
    assert fields({"a": 4, "b": "long", "c": "y"}, s) == ["a", "b", "c"]
    assert fields({"a": 1, "b": None}, s) == []  # optional fields may be null
    assert fields([], s) == ["body"]


def test_nested_paths_and_extra_fields() -> None:
    s = sc.obj({"xs": sc.array(sc.obj({"n": sc.string()}, ["n"]), 2)}, extra=False)
    assert fields({"xs": [{"n": "a"}, {}]}, s) == ["xs[1].n"]
    assert fields({"xs": [{}, {}, {}]}, s) == ["xs"]
    assert fields({"other": 1}, s) == ["other"]


def test_any_of_const_pattern_and_min_properties() -> None:
    s = sc.obj(
        {"r": sc.any_of(sc.obj({}), sc.string()), "t": sc.const(True), "p": sc.string(blank=False)},
        minProperties=1,
    )
    assert fields({"r": 1}, s) == ["r"]
    assert fields({"t": False}, s) == ["t"]
    assert fields({"p": "  "}, s) == ["p"]
    assert fields({}, s) == ["body"]


def test_unsupported_keywords_are_refused() -> None:
    sc.check_supported(sc.obj({"a": sc.string(3)}), "ok")
    try:
        sc.check_supported({"type": "object", "properties": {"a": {"oneOf": []}}}, "x")
    except ValueError as e:
        assert "x.a" in str(e)
    else:
        raise AssertionError("oneOf is not checked and must be refused")
