"""The fencing token on a job's commits: a transaction of a leased job names its lease and token
in DuckLake's commit info, and the catalog's trigger (`collector/cluster/postgres.py`) refuses the
commit when that token is no longer the lease's current one.

Change-feed steps (`collector/runs/feed.py`) and every other leased job apply their `Fence` in the
transaction that writes their results, so a holder paused past its lease can commit nothing.
"""

from __future__ import annotations

import json
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


def raise_if_fenced(e: BaseException, job: str) -> None:
    """Turn the catalog's refusal of a stale commit into `LeaseLost` (anything else: as is)."""
    if is_fenced(e):
        raise LeaseLost(f"{job}: the lease moved to another node; the commit was refused") from e
