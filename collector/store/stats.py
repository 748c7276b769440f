"""The store's own counters (commits, failures, commit latency buckets), kept by the writer and
shown in `/metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StoreStats:
    """Counters for /metrics, written by the writer thread only."""

    commits: int = 0
    commit_failures: int = 0
    commit_conflicts: int = 0  # commits refused for another node's and retried
    rows_committed: int = 0
    deduplicated: int = 0
    commit_seconds_total: float = 0.0
    commit_seconds_max: float = 0.0
    commit_latency_buckets: dict[float, int] = field(
        default_factory=lambda: dict.fromkeys((0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), 0)
    )

    failing_since: float | None = None
    """Monotonic time of the first of the commits failing now; None once one succeeds."""
    last_failure: str = ""
    orphans_removed: int = 0

    def record_failure(self, at: float, reason: str, *, of_store: bool = True) -> None:
        """A failed commit; `of_store` False when the rows were at fault, not the store (the
        store is not refusing then)."""
        self.commit_failures += 1
        if not of_store:
            return
        self.last_failure = reason
        if self.failing_since is None:
            self.failing_since = at

    def record_commit(self, seconds: float, rows: int) -> None:
        self.failing_since = None
        self.commits += 1
        self.rows_committed += rows
        self.commit_seconds_total += seconds
        self.commit_seconds_max = max(self.commit_seconds_max, seconds)
        for bound in self.commit_latency_buckets:
            if seconds <= bound:
                self.commit_latency_buckets[bound] += 1
