"""The read-side query layer's shared parts: windows, the error-status set, capped fetches.

`query_runs` and `query_metrics` hold the named, parametrised queries over the store's `runs`,
`span_runs` and `spans` tables; the read API calls them and serialises what they return.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from collector.store.lake import LAKE
from collector.store.readers import Reads

# Statuses that count as a failed run in error rates and error counts. `running` is not a
# failure (yet), so it stays in the denominator but never in the numerator.
ERROR_STATUSES: tuple[str, ...] = ("error", "timeout", "loop_detected")
RUN_STATUSES: tuple[str, ...] = ("running", "success", "error", "loop_detected", "timeout")

# Row caps of the queries that are not paged by the caller.
MAX_GROUPS = 1000
MAX_DETAIL_SPANS = 1000
MAX_CHILD_RUNS = 100
MAX_BUCKETS = 2000
MAX_SERIES_ROWS = 20_000

_DERIVED = ("runs", "span_runs", "run_tools")
_ONE_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    """An inclusive time window [start, end], both ends timezone-aware."""

    start: datetime
    end: datetime

    @property
    def start_ns(self) -> int:
        return epoch_us(self.start) * 1000

    @property
    def end_ns(self) -> int:
        return epoch_us(self.end) * 1000

    def previous(self) -> Window:
        """The window of the same length that ends just before this one starts."""
        length = self.end - self.start
        return Window(self.start - length - _ONE_US, self.start - _ONE_US)


def epoch_us(t: datetime) -> int:
    """Exact microseconds since the epoch (float `timestamp()` can be off by one)."""
    return (t - _EPOCH) // _ONE_US


def fetch(store: Reads, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """`store.query`, except that before the run deriver has created its tables there is
    nothing to read yet: a missing derived table reads as no rows, not as a 500."""
    try:
        return store.query(sql, params)
    except duckdb.CatalogException:
        if derived_tables_ready(store):
            raise
        return []


def derived_tables_ready(store: Reads) -> bool:
    rows = store.query(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? "
        "AND schema_name = 'main' AND table_name IN (SELECT unnest(?::VARCHAR[]))",
        [LAKE, list(_DERIVED)],
    )
    return bool(rows) and int(rows[0][0]) == len(_DERIVED)
