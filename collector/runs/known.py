"""The traces the run deriver knows to have stored spans, each with the start-time extent of
those spans: which changed traces are new (their spans are all in the change feed: nothing to
read back, no derived row to replace) and where the others' spans and rows lie.

Built from the store when derivation starts (`load`), then kept up by `derive.py` after each
committed step; in memory only, 24 bytes a trace.
"""

from __future__ import annotations

import logging

import duckdb
import numpy as np
import numpy.typing as npt

from collector.store.tiers import I64, U64, Found, Tiers

log = logging.getLogger(__name__)

_EPOCHS = 8


class KnownTraces:
    """Traces keyed by DuckDB's `hash(org, trace_id)`, with the lowest and highest start time
    (ns) of their spans, for traces with a span that started at or after `covered_from`.

    The promise: every trace with a committed span (up to the snapshot the deriver has read)
    that started at or after `covered_from` is held, its `hi` is the latest start among those
    spans, and its `lo` no later than the earliest. A trace lasts at most `max_trace_ns`, so a
    trace not held whose changed spans started at `hi` or later has no other stored span if
    `hi - max_trace_ns >= covered_from`: it is new. A hash collision only makes a new trace look
    known (it is read back: slower, never wrong).

    Entries whose latest start is older than the trace duration and an epoch are dropped, so
    memory follows the traffic of that long; past `max_traces` the oldest go first and
    `covered_from` moves up (traces that old are read back from the store instead).
    """

    def __init__(self, max_trace_ns: int, *, max_traces: int = 8_000_000) -> None:
        self.max_trace_ns = max_trace_ns
        self._epoch_ns = max(1, max_trace_ns // _EPOCHS)
        self._keep_ns = max_trace_ns + self._epoch_ns
        self._max_traces = max_traces
        self._tiers = Tiers(float(self._epoch_ns), extents=True)
        self.covered_from = np.iinfo(np.int64).max  # nothing is covered before `load`

    def __len__(self) -> int:
        return self._tiers.size

    def load(self, cur: duckdb.DuckDBPyConnection, now_ns: int) -> None:
        """Every trace with a span, a run or a span-to-run row that started within the kept
        time, read in `cur`'s transaction. Runs and span-to-run rows count because they can
        outlive spans deleted by retention: their start bounds where a derived row may lie."""
        since = now_ns - self._keep_ns
        found = cur.execute(
            """SELECT hash(org, trace_id) AS h, min(t) AS lo, max(t) AS hi FROM (
                   SELECT org, trace_id, start_time_unix_nano AS t FROM spans
                   WHERE start_time_unix_nano >= $since
                   UNION ALL
                   SELECT org, trace_id, start_time_unix_nano FROM span_runs
                   WHERE start_time_unix_nano >= $since
                   UNION ALL
                   SELECT org, trace_id, epoch_ns(started_at) FROM runs
                   WHERE started_at >= make_timestamptz($since::BIGINT // 1000)
               ) GROUP BY org, trace_id""",
            {"since": since},
        ).fetchnumpy()
        self._tiers = Tiers(float(self._epoch_ns), extents=True)
        keys = np.asarray(found["h"], dtype=np.uint64)
        if len(keys):
            lo = np.asarray(found["lo"], dtype=np.int64)
            hi = np.asarray(found["hi"], dtype=np.int64)
            self._tiers.add(keys, float(now_ns), lo=lo, hi=hi)
        self.covered_from = since
        log.info("run derivation knows %d traces started since %d", len(keys), since)
        self._trim(now_ns)

    def find(self, keys: U64) -> Found:
        return self._tiers.find(keys)

    def is_new(self, hi: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """For traces not held whose changed spans started at `hi` at the latest: whether they
        certainly have no other stored span."""
        return hi - self.max_trace_ns >= self.covered_from

    def add(self, keys: U64, lo: I64, hi: I64, now_ns: int) -> None:
        """Spans of these traces were committed and read (extents of those spans)."""
        if not len(keys):
            return
        found, old_lo, old_hi = self._tiers.find(keys)
        lo = np.where(found, np.minimum(lo, old_lo), lo)
        hi = np.where(found, np.maximum(hi, old_hi), hi)
        self._tiers.add(keys, float(now_ns), lo=lo, hi=hi)
        self._trim(now_ns)

    def _trim(self, now_ns: int) -> None:
        tiers = self._tiers
        cutoff = now_ns - self._keep_ns
        # An epoch past the kept time keeps its traces still running (carried into the current
        # generation); the others go, and coverage starts after the latest of them.
        while tiers.generations and tiers.epoch(float(cutoff)) > tiers.generations[0].epoch:
            gen = tiers.pop_oldest()
            assert gen.lo is not None and gen.hi is not None
            live = gen.hi >= cutoff
            if not live.all():
                self._uncover(int(gen.hi[~live].max()))
            if live.any():
                tiers.add(gen.keys[live], float(now_ns), lo=gen.lo[live], hi=gen.hi[live])
        while tiers.size > self._max_traces and len(tiers.generations) > 1:
            gen = tiers.pop_oldest()
            assert gen.hi is not None
            self._uncover(int(gen.hi.max()))

    def _uncover(self, latest: int) -> None:
        if latest >= self.covered_from:
            self.covered_from = latest + 1
