"""Sorted 64-bit keys in generations merged by epoch and size, optionally with a [lo, hi] extent
per key: the in-memory sets behind span dedup (`dedup.py`) and the run deriver's known traces
(`collector/runs/known.py`). The callers add keys as they commit and decide what expires.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Found = tuple[npt.NDArray[np.bool_], I64, I64]


@dataclass
class Generation:
    epoch: int
    newest: float  # when its newest key was added
    keys: U64  # sorted, unique
    lo: I64 | None = None  # per key, with `extents`
    hi: I64 | None = None


class Tiers:
    """Generations of sorted keys, oldest first.

    Within the current epoch each `add` is a generation, and two neighbours merge when the older
    is no larger than the newer (a binary counter: about log2(adds) generations, each key merged
    about that many times); once its epoch is over, an epoch's generations merge into one. So an
    add costs about O(log n) a key whatever the tiers hold, and a lookup searches one array per
    past epoch and a few for the current one. With `extents`, a key repeated across adds keeps
    the lowest `lo` and the highest `hi` it was given.
    """

    def __init__(self, epoch_len: float, *, extents: bool = False) -> None:
        self._epoch_len = epoch_len
        self._extents = extents
        self.generations: list[Generation] = []
        self.size = 0  # keys held, counting a key once per generation it is in

    def epoch(self, now: float) -> int:
        return int(now // self._epoch_len)

    def add(self, keys: U64, now: float, lo: I64 | None = None, hi: I64 | None = None) -> None:
        epoch = self.epoch(now)
        gens = self.generations
        if len(keys):
            gens.append(self._make(epoch, now, [keys], [lo], [hi]))
            self.size += len(gens[-1].keys)
            while (
                len(gens) > 1
                and gens[-2].epoch == epoch
                and len(gens[-2].keys) <= len(gens[-1].keys)
            ):
                self._merge(len(gens) - 2, len(gens))
        i = 0
        while i < len(gens):  # close the epochs that are over
            j = i
            while j < len(gens) and gens[j].epoch == gens[i].epoch:
                j += 1
            if gens[i].epoch < epoch and j - i > 1:
                self._merge(i, j)
            i += 1

    def find(self, keys: U64) -> Found:
        """Which keys are held and, with `extents`, their lowest lo and highest hi (the int64
        limits for keys not held)."""
        # Sorted probes walk each generation in order: far fewer cache misses than random ones.
        order = np.argsort(keys)
        probes = keys[order]
        found = np.zeros(len(keys), dtype=np.bool_)
        lo = np.full(len(keys), np.iinfo(np.int64).max, dtype=np.int64)
        hi = np.full(len(keys), np.iinfo(np.int64).min, dtype=np.int64)
        for gen in self.generations:
            idx = np.searchsorted(gen.keys, probes)
            idx[idx == len(gen.keys)] = len(gen.keys) - 1
            hit = gen.keys[idx] == probes
            found |= hit
            if gen.lo is not None and gen.hi is not None and hit.any():
                lo[hit] = np.minimum(lo[hit], gen.lo[idx[hit]])
                hi[hit] = np.maximum(hi[hit], gen.hi[idx[hit]])
        out = (np.empty_like(found), np.empty_like(lo), np.empty_like(hi))
        out[0][order], out[1][order], out[2][order] = found, lo, hi
        return out

    def pop_oldest(self) -> Generation:
        gen = self.generations.pop(0)
        self.size -= len(gen.keys)
        return gen

    def _merge(self, lo: int, hi: int) -> None:
        """Generations lo..hi-1 (one epoch's) become one."""
        part = self.generations[lo:hi]
        merged = self._make(
            part[0].epoch,
            max(g.newest for g in part),
            [g.keys for g in part],
            [g.lo for g in part],
            [g.hi for g in part],
        )
        self.size += len(merged.keys) - sum(len(g.keys) for g in part)
        self.generations[lo:hi] = [merged]

    def _make(
        self,
        epoch: int,
        newest: float,
        keys: list[U64],
        lo: list[I64 | None],
        hi: list[I64 | None],
    ) -> Generation:
        joined = np.concatenate(keys) if len(keys) > 1 else keys[0]
        if not len(joined):
            empty = np.empty(0, dtype=np.int64) if self._extents else None
            return Generation(epoch, newest, joined, empty, empty)
        if not self._extents:
            # A stable sort of sorted runs is a merge (timsort), linear in their sizes.
            merged = np.sort(joined, kind="stable")
            if len(merged) > 1:
                merged = merged[np.concatenate(([True], merged[1:] != merged[:-1]))]
            return Generation(epoch, newest, merged)
        los = [x for x in lo if x is not None]
        his = [x for x in hi if x is not None]
        if len(los) != len(keys) or len(his) != len(keys):
            raise ValueError("these tiers keep an extent per key: give lo and hi")
        order = np.argsort(joined, kind="stable")
        ordered = joined[order]
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        all_lo: I64 = np.concatenate(los)[order]
        all_hi: I64 = np.concatenate(his)[order]
        return Generation(
            epoch,
            newest,
            ordered[starts],
            np.minimum.reduceat(all_lo, starts),
            np.maximum.reduceat(all_hi, starts),
        )
