"""The fencing token on a job's commits: a transaction of a leased job names its lease and token
in DuckLake's commit info, and the catalog's trigger (`collector/cluster/postgres.py`) refuses the
commit when that token is no longer the lease's current one.

The lease loop (`collector/cluster/keeper.py`) runs each job with its fence as the task's context
(`holding`); the store's writer thread (`collector/store/writer.py`) applies the fence of the
caller's context to every transaction it runs for that job, so a holder paused past its lease can
commit nothing, whichever module of the job writes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import duckdb

from collector.store.conflict import is_fenced
from collector.store.lake import LAKE


class LeaseLost(Exception):
    """The job's lease moved to another node: this node's commit was refused, and it stops."""


@dataclass(frozen=True)
class Fence:
    """`job`'s lease held under `token` by `node`."""

    job: str
    token: int
    node: str

    def apply(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Mark `cur`'s open transaction as this lease's: its commit fails if the lease moved."""
        info = json.dumps({"fence": {"job": self.job, "token": self.token}})
        cur.execute(
            f"CALL {LAKE}.set_commit_message(?, ?, extra_info => ?)",
            [self.node, self.job, info],
        )


# A context variable rather than an argument threaded through every job's modules: asyncio tasks
# and `asyncio.to_thread` carry it, so every write a job makes, however deep, is fenced.
_HOLDING: ContextVar[Fence | None] = ContextVar("agentledger_fence", default=None)


def current() -> Fence | None:
    """The fence of the job this code runs for (None: not a leased job, or a single node)."""
    return _HOLDING.get()


@contextlib.contextmanager
def holding(fence: Fence | None) -> Iterator[None]:
    """Run the enclosed code (and the tasks and threads it starts) under `fence`."""
    token = _HOLDING.set(fence)
    try:
        yield
    finally:
        _HOLDING.reset(token)


def raise_if_fenced(e: BaseException, job: str) -> None:
    """Turn the catalog's refusal of a stale commit into `LeaseLost` (anything else: as is)."""
    if is_fenced(e):
        raise LeaseLost(f"{job}: the lease moved to another node; the commit was refused") from e
