"""Tests for `collector/store/tiers.py`: sorted key generations, their merges, and the extents
kept per key. Times are given explicitly.
"""

from __future__ import annotations

import numpy as np
import pytest

from collector.store.tiers import Tiers

MAX, MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def u64(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.uint64)


def i64(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def test_extents_of_a_key_added_many_times_are_its_lowest_and_highest() -> None:
    tiers = Tiers(10.0, extents=True)
    tiers.add(u64(5, 1, 5), 0.0, lo=i64(50, 10, 40), hi=i64(55, 15, 45))  # 5 twice in one add
    tiers.add(u64(5, 9), 1.0, lo=i64(60, 90), hi=i64(70, 95))
    found, lo, hi = tiers.find(u64(9, 5, 1, 2))
    assert found.tolist() == [True, True, True, False]
    assert lo.tolist() == [90, 40, 10, MAX]
    assert hi.tolist() == [95, 70, 15, MIN]


def test_merges_keep_every_key_and_its_extent() -> None:
    tiers = Tiers(1_000.0, extents=True)
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 2**63, size=3000, dtype=np.uint64)
    for i in range(300):  # one epoch: the binary counter merges most of these adds
        part = keys[i * 10 : (i + 1) * 10]
        tiers.add(part, float(i), lo=np.full(10, i, np.int64), hi=np.full(10, i + 1, np.int64))
    assert len(tiers.generations) <= 10
    found, lo, hi = tiers.find(keys)
    assert found.all()
    assert (lo == np.repeat(np.arange(300), 10)).all()
    assert (hi == lo + 1).all()


def test_an_ended_epoch_is_one_generation_and_pops_whole() -> None:
    tiers = Tiers(10.0)
    for t in range(7):
        tiers.add(u64(t), float(t))
    assert len(tiers.generations) == 3  # 4 + 2 + 1
    tiers.add(u64(100), 10.0)
    assert [len(g.keys) for g in tiers.generations] == [7, 1]
    oldest = tiers.pop_oldest()
    assert oldest.keys.tolist() == list(range(7)) and oldest.newest == 6.0
    assert tiers.size == 1 and tiers.find(u64(3, 100))[0].tolist() == [False, True]


def test_extents_are_required_when_kept() -> None:
    with pytest.raises(ValueError, match="extent"):
        Tiers(10.0, extents=True).add(u64(1), 0.0)
