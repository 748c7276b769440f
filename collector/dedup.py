"""Recently stored span identities, so an OTLP retry is recognised without scanning the store.

The store writer asks which of a group's span hashes it may have stored already and confirms
those few exactly against the store; hashes come from DuckDB's `hash(trace_id, span_id)`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]


class RecentKeys:
    """Sorted generations of 64-bit span hashes, one per commit, merged LSM-style.

    Memory is 8 bytes a span for `window_s` seconds of traffic, capped at `max_keys`; a hash
    match is only a candidate (the caller confirms it), so a collision never drops a span.
    """

    def __init__(self, window_s: float, max_keys: int = 50_000_000, max_generations: int = 12):
        self._window_s = window_s
        self._max_keys = max_keys
        self._max_generations = max_generations
        self._generations: list[tuple[float, U64]] = []  # (newest entry time, sorted hashes)

    def __len__(self) -> int:
        return sum(len(g) for _, g in self._generations)

    def may_contain(self, hashes: U64) -> npt.NDArray[np.bool_]:
        found = np.zeros(len(hashes), dtype=np.bool_)
        for _, gen in self._generations:
            idx = np.searchsorted(gen, hashes)
            idx[idx == len(gen)] = len(gen) - 1
            found |= gen[idx] == hashes
        return found

    def add(self, hashes: U64, now: float) -> None:
        if len(hashes):
            self._generations.append((now, np.sort(hashes)))
        self._expire(now)
        if len(self._generations) > self._max_generations:
            # Merge all but the newest: their union expires when its newest entry does.
            old = self._generations[:-1]
            merged = np.unique(np.concatenate([g for _, g in old]))
            self._generations = [(max(t for t, _ in old), merged), self._generations[-1]]

    def _expire(self, now: float) -> None:
        cutoff = now - self._window_s
        self._generations = [(t, g) for t, g in self._generations if t >= cutoff]
        while self._generations and len(self) > self._max_keys:
            self._generations.pop(0)
