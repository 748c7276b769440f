"""Which commit failures are conflicts worth retrying, and the retry itself."""

from __future__ import annotations

import duckdb
import pytest

from collector.store import conflict


def test_conflicts_are_retried_and_fence_refusals_are_not() -> None:
    clash = duckdb.TransactionException("Transaction conflict - another transaction deleted")
    fenced = duckdb.Error("agentledger fence: the lease of runs moved to token 3")
    assert conflict.is_conflict(clash) and not conflict.is_fenced(clash)
    assert conflict.is_fenced(fenced) and not conflict.is_conflict(fenced)
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise clash
        return "done"

    counted: list[int] = []
    assert conflict.retry(flaky, "test", lambda: counted.append(1)) == "done"
    assert len(tries) == 3 and len(counted) == 2

    def refused() -> None:
        raise fenced

    with pytest.raises(duckdb.Error):
        conflict.retry(refused, "test")
