"""Commit conflicts between nodes of one shared store: which DuckDB errors are DuckLake refusing a
commit because another node's commit touched the same rows or tables, and retrying those.

The writer thread (`collector/store/writer.py`) and start-up DDL retry through `retry()`; a commit
refused by a lease's fence (`collector/cluster/fence.py`) is not a conflict and is never retried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import duckdb

log = logging.getLogger(__name__)
T = TypeVar("T")

FENCE_REFUSED = "agentledger fence"
"""Words of the error the catalog raises on a commit whose lease moved (see cluster/fence.py)."""

ATTEMPTS = 8


def is_fenced(e: BaseException) -> bool:
    return isinstance(e, duckdb.Error) and FENCE_REFUSED in str(e)


def is_conflict(e: BaseException) -> bool:
    """DuckLake refused the commit because a concurrent one conflicts with it: doing the same
    transaction again on the newer snapshot is the remedy (a fence refusal is not one)."""
    if not isinstance(e, duckdb.Error) or is_fenced(e):
        return False
    text = str(e).lower()
    return "conflict" in text or "could not serialize" in text or "deadlock" in text


def backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt` (1-based): short, growing, jittered so two nodes
    that collided do not collide again in step."""
    return float(min(0.5, 0.01 * 2**attempt) * (0.5 + random.random()))


def retry(fn: Callable[[], T], what: str, on_conflict: Callable[[], None] | None = None) -> T:
    """`fn()` (one whole transaction), again after a conflict, up to `ATTEMPTS` times."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return fn()
        except duckdb.Error as e:
            if not is_conflict(e) or attempt == ATTEMPTS:
                raise
            if on_conflict is not None:
                on_conflict()
            log.debug("%s: commit conflict, retrying (%d)", what, attempt)
            time.sleep(backoff(attempt))
    raise AssertionError("unreachable")
