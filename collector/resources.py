"""The files shipped with agentledger as package data (`config/`, installed as
`agentledger_config`), read through importlib.resources: never by a path beside the source.

Callers name a file relative to the data package (`"default.yaml"`, `"grafana/datasource.yaml"`);
the default config, the task-type catalogue, the price book and the judge's model list come here.
"""

from __future__ import annotations

import contextlib
import importlib.resources
from collections.abc import Iterator
from importlib.resources.abc import Traversable
from pathlib import Path

PACKAGE = "agentledger_config"


def shipped(name: str) -> Traversable:
    """The shipped file `name` (it may not exist: check `.is_file()`)."""
    node = importlib.resources.files(PACKAGE)
    for part in name.split("/"):
        node = node / part
    return node


def shipped_text(name: str) -> str:
    """The text of a shipped file; FileNotFoundError naming it if the install lacks it."""
    node = shipped(name)
    if not node.is_file():
        raise FileNotFoundError(f"{PACKAGE}/{name} is missing from this installation")
    return node.read_text(encoding="utf-8")


@contextlib.contextmanager
def shipped_path(name: str) -> Iterator[Path]:
    """A filesystem path to a shipped file for as long as the context lasts (a temporary copy
    when the package is not on a filesystem, e.g. in a zip)."""
    with importlib.resources.as_file(shipped(name)) as path:
        yield path
