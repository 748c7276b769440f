"""Tests for `collector/store/dedup.py`: the recent span-hash generations the store writer consults.

Hashes are plain uint64 arrays (the store gets them from the `span_key` column); times are given
explicitly, so expiry is tested without sleeping.
"""

from __future__ import annotations

import numpy as np

from collector.store.dedup import RecentSpanHashes


def u64(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.uint64)


def test_empty_contains_nothing() -> None:
    keys = RecentSpanHashes(window_s=60)
    assert len(keys) == 0
    assert keys.may_contain(u64(1, 2, 3)).tolist() == [False, False, False]
    assert keys.may_contain(u64()).tolist() == []


def test_added_hashes_are_found_and_others_not() -> None:
    keys = RecentSpanHashes(window_s=60)
    top = 2**64 - 1
    keys.add(u64(50, 10, 30, top), now=100.0)  # unsorted on purpose
    keys.add(u64(20), now=101.0)
    assert len(keys) == 5
    probe = u64(10, 11, 20, 30, 49, 50, 51, top, 0, top - 1)
    assert keys.may_contain(probe).tolist() == [
        True,
        False,
        True,
        True,
        False,
        True,
        False,
        True,
        False,
        False,
    ]


def test_adding_nothing_makes_no_generation_but_still_expires() -> None:
    keys = RecentSpanHashes(window_s=10)
    keys.add(u64(1), now=0.0)
    keys.add(u64(), now=5.0)
    assert len(keys) == 1 and keys.may_contain(u64(1)).tolist() == [True]
    keys.add(u64(), now=10.5)  # an empty commit still moves time on
    assert len(keys) == 0
    assert keys.may_contain(u64(1)).tolist() == [False]


def test_generations_expire_after_the_window() -> None:
    keys = RecentSpanHashes(window_s=10)
    keys.add(u64(1, 2), now=0.0)
    keys.add(u64(3), now=5.0)
    keys.add(u64(4), now=10.0)  # exactly the window after the first: still kept
    assert keys.may_contain(u64(1, 2, 3, 4)).tolist() == [True, True, True, True]
    keys.add(u64(5), now=10.001)
    assert keys.may_contain(u64(1, 2, 3, 4, 5)).tolist() == [False, False, True, True, True]
    assert len(keys) == 3
    keys.add(u64(), now=100.0)
    assert len(keys) == 0


def test_many_generations_merge_without_losing_hashes() -> None:
    keys = RecentSpanHashes(window_s=1_000)
    for i in range(10):
        keys.add(u64(i, 100 + i, 7), now=float(i))  # 7 repeats in every generation
    all_added = u64(*range(10), *range(100, 110), 7)
    assert keys.may_contain(all_added).all()
    assert not keys.may_contain(u64(10, 99, 110)).any()
    # 30 hashes were added, 20 distinct; a merged generation holds each of its hashes once.
    assert 20 <= len(keys) < 30


def test_generations_stay_logarithmic_within_an_epoch() -> None:
    keys = RecentSpanHashes(window_s=1_000, epochs=8)  # epochs of 125 s
    for i in range(1000):
        keys.add(u64(2 * i, 2 * i + 1), now=i / 100)  # all in the first epoch
    assert keys.generations <= 11  # log2(1000) + 1
    assert len(keys) == 2000
    assert keys.may_contain(u64(*range(2000))).all()


def test_an_ended_epoch_merges_into_one_generation() -> None:
    keys = RecentSpanHashes(window_s=80, epochs=8)  # epochs of 10 s
    for i in range(7):
        keys.add(u64(i), now=float(i))  # epoch 0: 1 + 2 + 4 hashes in three generations
    assert keys.generations == 3
    keys.add(u64(100), now=10.0)  # epoch 1 begins: epoch 0 is one generation now
    assert keys.generations == 2
    assert keys.may_contain(u64(*range(7), 100)).all()


def test_an_epoch_expires_with_its_newest_entry() -> None:
    keys = RecentSpanHashes(window_s=80, epochs=8)  # epochs of 10 s
    keys.add(u64(1), now=0.0)
    keys.add(u64(2), now=9.0)  # the same epoch: {1, 2}, newest 9
    keys.add(u64(3), now=15.0)
    # 1 is older than the window now, but its epoch's newest entry is not (a longer memory
    # only costs an exact check, never a duplicate).
    keys.add(u64(), now=85.0)
    assert keys.may_contain(u64(1, 2, 3)).all()
    keys.add(u64(), now=89.5)  # the window after 9
    assert keys.may_contain(u64(1, 2, 3)).tolist() == [False, False, True]
    assert len(keys) == 1


def test_cap_drops_the_oldest_generations_first() -> None:
    keys = RecentSpanHashes(window_s=1_000, max_keys=10)
    keys.add(u64(*range(0, 6)), now=1.0)
    keys.add(u64(*range(10, 14)), now=2.0)
    assert len(keys) == 10
    keys.add(u64(20, 21), now=3.0)
    assert len(keys) <= 10
    assert not keys.may_contain(u64(0, 5)).any()
    assert keys.may_contain(u64(10, 13, 20, 21)).all()


def test_large_random_sets_have_no_false_negatives() -> None:
    rng = np.random.default_rng(7)
    keys = RecentSpanHashes(window_s=1_000)
    added = []
    for i in range(20):
        batch = rng.integers(0, 2**63, size=500, dtype=np.uint64) * np.uint64(2)  # even only
        keys.add(batch, now=float(i))
        added.append(batch)
    everything = np.concatenate(added)
    assert keys.may_contain(everything).all()
    assert not keys.may_contain(everything + np.uint64(1)).any()  # odd: never added


def test_a_zero_window_remembers_nothing() -> None:
    keys = RecentSpanHashes(window_s=0)
    keys.add(u64(1, 2), now=5.0)
    assert len(keys) == 0 and not keys.may_contain(u64(1, 2)).any()
