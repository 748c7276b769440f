"""The built-in task-type catalogue: baseline minutes a human needs for common agent tasks.

Loaded once from `config/task_types.json` into frozen objects and handed to the ROI API, which
resolves a tracked event's baseline with it (after request and org-override layers).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.resources import PACKAGE, shipped_text

SHIPPED = "task_types.json"  # in the shipped data package (collector/resources.py)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,99}$")
MAX_BASELINE_MINUTES = 525_600.0  # a year: anything longer is a unit mistake, not a task
_FILE_KEYS = frozenset({"version", "unit", "notes", "task_types"})
_TYPE_KEYS = frozenset({"name", "baseline_minutes", "description"})


@dataclass(frozen=True)
class TaskType:
    name: str
    baseline_minutes: float
    description: str


@dataclass(frozen=True)
class Catalogue:
    version: str
    types: tuple[TaskType, ...]
    _index: dict[str, TaskType] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {t.name: t for t in self.types})

    def get(self, name: str) -> TaskType | None:
        return self._index.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._index


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Read and validate a catalogue file (the shipped one when `path` is None)."""
    where = str(path) if path is not None else f"{PACKAGE}/{SHIPPED}"
    try:
        text = path.read_text(encoding="utf-8") if path is not None else shipped_text(SHIPPED)
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{where}: cannot read task types: {exc}") from exc
    return parse_catalogue(data, where)


def parse_catalogue(data: Any, where: str = "task_types") -> Catalogue:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object")
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise ValueError(f"{where}.version: expected a non-empty string")
    raw = data.get("task_types")
    if not isinstance(raw, list):
        raise ValueError(f"{where}.task_types: expected a list")
    types: list[TaskType] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        at = f"{where}.task_types[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{at}: expected an object")
        unknown = set(entry) - _TYPE_KEYS
        if unknown:
            raise ValueError(f"{at}: unknown key {sorted(unknown)[0]!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ValueError(f"{at}.name: expected a lowercase name like email_classification")
        if name in seen:
            raise ValueError(f"{at}.name: {name!r} is listed twice")
        seen.add(name)
        minutes = entry.get("baseline_minutes")
        if not valid_minutes(minutes):
            raise ValueError(f"{at}.baseline_minutes: expected a number > 0 and ≤ a year")
        description = entry.get("description")
        if not isinstance(description, str) or not description or "\n" in description:
            raise ValueError(f"{at}.description: expected a one-line string")
        assert isinstance(minutes, int | float)
        types.append(TaskType(name, float(minutes), description))
    return Catalogue(version, tuple(types))


def valid_minutes(value: Any) -> bool:
    """A baseline: a finite number above 0 and at most a year (booleans are not numbers)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value <= MAX_BASELINE_MINUTES
    )
