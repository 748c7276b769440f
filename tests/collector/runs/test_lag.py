"""Tests for `collector/runs/lag.py`: derivation lag in seconds and spans, from the commits the
writer reports and the snapshots the deriver has read (a fake clock), and how admission paces
requests of spans by it (on the event loop's real clock)."""

from __future__ import annotations

import asyncio

import pytest

from collector.model import Overloaded
from collector.runs.lag import DerivationLag


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lag_is_the_age_of_the_oldest_commit_not_derived() -> None:
    clock = Clock()
    lag = DerivationLag(60, clock)
    assert (lag.seconds(), lag.spans(), lag.over()) == (0.0, 0, None)
    lag.committed(5, 100)
    clock.t += 1
    lag.committed(6, 50)
    clock.t += 2
    assert (lag.seconds(), lag.spans()) == (3.0, 150)
    lag.derived(5)
    assert (lag.seconds(), lag.spans()) == (2.0, 50)
    lag.derived(7)  # past what was committed: nothing waits
    assert (lag.seconds(), lag.spans()) == (0.0, 0)
    lag.committed(6, 10)  # a snapshot already derived (ids may run late): derived at once
    assert lag.spans() == 0


def test_over_the_bound_says_by_how_much() -> None:
    clock = Clock()
    lag = DerivationLag(60, clock)
    lag.committed(1, 10)
    clock.t += 60
    assert lag.over() is None
    clock.t += 15
    assert lag.over() == 15.0
    assert DerivationLag(0, clock).over() is None  # no bound


def test_close_commits_share_an_entry() -> None:
    clock = Clock()
    lag = DerivationLag(60, clock)
    for i in range(1000):
        lag.committed(i, 1)
        clock.t += 0.00005  # all within the resolution
    assert len(lag._waiting) == 1 and lag.spans() == 1000
    lag.derived(998)  # inside the shared entry: it waits until its last snapshot is derived
    assert lag.spans() == 1000
    lag.derived(999)
    assert lag.spans() == 0


def test_past_the_pace_target_a_request_waits_until_derivation_catches_up() -> None:
    clock = Clock()
    lag = DerivationLag(60, clock, pace_lag_s=5, pace_wait_s=10)
    lag.committed(1, 10)

    async def scenario() -> float:
        await lag.admit()  # at the target: no wait
        assert lag.paced == 0
        clock.t += 6
        loop = asyncio.get_running_loop()
        # The deriver catches up after 0.2 s; the request is let in then, not after 10 s.
        loop.call_later(0.2, lag.derived, 1)
        started = loop.time()
        await lag.admit()
        return loop.time() - started

    waited = asyncio.run(scenario())
    assert 0.2 <= waited < 5
    assert lag.paced == 1 and lag.paced_s == pytest.approx(waited, abs=0.01)


def test_a_paced_request_waits_at_most_pace_wait_s_then_is_refused_past_the_bound() -> None:
    clock = Clock()
    lag = DerivationLag(8, clock, pace_lag_s=5, pace_wait_s=0.2)
    lag.committed(1, 10)
    clock.t += 6

    async def admit() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await lag.admit()  # derivation never catches up: in after the wait, under the bound
        return loop.time() - started

    assert 0.2 <= asyncio.run(admit()) < 5
    clock.t += 3  # past the bound: refused after its wait
    with pytest.raises(Overloaded):
        asyncio.run(admit())
    assert lag.paced == 2
    # No pace target: no wait, only the bound.
    unpaced = DerivationLag(8, clock)
    unpaced.committed(1, 10)
    clock.t += 6
    asyncio.run(unpaced.admit())
    assert unpaced.paced == 0
