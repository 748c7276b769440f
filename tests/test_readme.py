"""The README's configuration reference against `config/default.yaml`, the file it describes:
every section of the file has a row, and every row names keys the file has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Sections whose keys are ids the operator chooses (components, pipelines), not fixed names.
OPEN = {"receivers", "processors", "exporters", "extensions", "service"}


def _reference() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Configuration reference")
    return text[start : text.index("\n## ", start)]


def _row_keys(reference: str) -> list[str]:
    """The dotted keys a table row's first cell names: `a.b` / `a.c`, `a.{b,c}`, `a[].b`."""
    keys = []
    for line in reference.splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        parent = ""
        for quoted in re.findall(r"`([^`]+)`", cell):
            name = quoted.replace("[]", "")
            if "." not in name and parent:  # `limits.a` / `b`: b is limits.b
                name = f"{parent}.{name}"
            parent = parent or name.rsplit(".", 1)[0]
            braces = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", name)
            if braces:
                head, alts, tail = braces.groups()
                keys += [f"{head}{alt.strip()}{tail}" for alt in alts.split(",")]
            else:
                keys.append(name)
    return keys


def _has(config: dict[str, Any], key: str) -> bool:
    node: Any = config
    for part in key.split("."):
        if isinstance(node, list):  # a list of mappings (auth.orgs): any key of one is fine
            return True
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_every_section_of_the_default_config_has_a_row() -> None:
    config = yaml.safe_load((ROOT / "config" / "default.yaml").read_text(encoding="utf-8"))
    sections = {key.split(".")[0] for key in _row_keys(_reference())}
    assert sorted(set(config) - sections) == []


def test_every_row_names_keys_of_the_default_config() -> None:
    config = yaml.safe_load((ROOT / "config" / "default.yaml").read_text(encoding="utf-8"))
    stale = [
        key
        for key in _row_keys(_reference())
        if key.split(".")[0] not in OPEN and not _has(config, key)
    ]
    assert stale == []


def _layout() -> dict[str, set[str]]:
    """The README's layout tree: each package (`collector`, `collector/store`, ...) and the
    module names its lines list."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```", text.index("## Layout"))
    block = text[start + 3 : text.index("```", start + 3)]
    tree: dict[str, set[str]] = {}
    top = package = ""
    for line in block.splitlines():
        head = re.match(r"^(\s*)(\w+)/\s", line)
        if head and not head.group(1):
            top = package = head.group(2)
        elif head and len(head.group(1)) == 2:
            package = f"{top}/{head.group(2)}"
        words = line[head.end() :] if head else line
        tree.setdefault(package, set()).update(re.findall(r"\w+", words))
    return tree


def test_the_layout_lists_every_module() -> None:
    tree = _layout()
    missing = []
    for top in ("collector", "processors", "exporters"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.name == "__init__.py":
                continue
            package = path.parent.relative_to(ROOT).as_posix()
            if path.stem not in tree.get(package, set()):
                missing.append(path.relative_to(ROOT).as_posix())
    assert missing == []
