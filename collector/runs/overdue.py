"""Runs still waiting for their root span past `root_timeout_s`, for the run deriver to re-derive
as timeouts: found in the `runs` table that `collector/runs/derive.py` writes, and only when due.
"""

from __future__ import annotations

import time

from collector.store.writer import Store
from processors.runs.assemble import RunsConfig

_NS = 1_000_000_000
_NEVER = 1 << 62  # ns: later than any clock reading
_FULL_SCAN_EVERY_S = 3600


class OverdueRuns:
    """Looks for overdue runs only when a waiting run may have timed out since the last look, or
    runs changed since (`runs_changed`): only the deriver writes runs, so until it commits again
    no run can time out sooner, and idle steps make no query. A look covers runs started within
    the longest trace plus two timeouts (the start-time bound lets min/max statistics skip older
    files); the first one and one an hour cover all runs, for runs left waiting while derivation
    was stopped."""

    def __init__(self, config: RunsConfig, max_traces: int) -> None:
        self._config = config
        self._max_traces = max_traces
        self._full_at = 0.0  # monotonic time of the next unbounded look
        self._next_ns: int | None = None  # when the next waiting run times out; None: look now

    def runs_changed(self) -> None:
        self._next_ns = None

    def due(self, store: Store, now: int) -> list[tuple[str, str, int, int, int]]:
        """(org, trace_id, its `hash(org, trace_id)`, first start, last start) of the traces with
        overdue runs, at most `max_traces`; [] when none can be due yet."""
        full = time.monotonic() >= self._full_at
        if not full and self._next_ns is not None and now < self._next_ns:
            return []
        timeout = self._config.root_timeout_s * _NS
        cutoff = now - timeout
        since = 0
        if full:
            self._full_at = time.monotonic() + _FULL_SCAN_EVERY_S
        else:
            span = self._config.max_trace_duration_s + 2 * self._config.root_timeout_s
            since = now - span * _NS
        rows = store.query(
            """SELECT org, trace_id, hash(org, trace_id),
                      min(epoch_ns(started_at)), max(epoch_ns(started_at))
               FROM runs WHERE status = 'running'
                 AND last_span_at <= make_timestamptz(?::BIGINT // 1000)
                 AND started_at >= make_timestamptz(?::BIGINT // 1000)
               GROUP BY ALL ORDER BY 1, 2 LIMIT ?""",
            [cutoff, since, self._max_traces],
        )
        found = [(str(o), str(t), int(h), int(lo), int(hi)) for o, t, h, lo, hi in rows]
        if len(rows) == self._max_traces:
            self._next_ns = None  # more may be waiting beyond the cap
            return found
        waiting = store.query(
            """SELECT min(epoch_ns(last_span_at)) FROM runs WHERE status = 'running'
                 AND last_span_at > make_timestamptz(?::BIGINT // 1000)
                 AND started_at >= make_timestamptz(?::BIGINT // 1000)""",
            [cutoff, since],
        )
        first = waiting[0][0] if waiting else None
        # Nothing waiting: nothing can time out until a commit of the deriver's makes one.
        self._next_ns = _NEVER if first is None else int(first) + timeout
        return found
