"""The lease loop on a real PostgreSQL: each job runs on one node; when its holder stops, or
stops renewing, another node runs it within about the lease."""

from __future__ import annotations

import asyncio
import time

from collector.cluster.fence import Fence
from collector.cluster.keeper import Job, Keeper
from collector.cluster.leases import Leases
from collector.cluster.postgres import Coordinator
from tests.cluster import PostgresServer
from tests.collector.cluster.test_leases import _coordinator


def _recording(name: str, running: dict[str, list[str]]) -> Job:
    async def run(fence: Fence | None, stop: asyncio.Event) -> None:
        assert fence is not None
        running.setdefault(name, []).append(fence.node)
        await stop.wait()
        running[name].remove(fence.node)

    return Job(name, run)


async def _until(check: object, timeout: float) -> float:
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, "timed out"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def test_each_job_on_one_node_and_taken_over_after_a_stop(
    postgres_server: PostgresServer,
) -> None:
    coordinator: Coordinator = _coordinator(postgres_server)

    async def main() -> None:
        running: dict[str, list[str]] = {}
        jobs = ["derive", "outbox", "maintenance"]
        a = Keeper([_recording(j, running) for j in jobs], Leases(coordinator, "a", 2.0))
        b = Keeper([_recording(j, running) for j in jobs], Leases(coordinator, "b", 2.0))
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        task_a = asyncio.create_task(a.run(stop_a))
        await _until(lambda: a.held() == sorted(jobs), 5)
        task_b = asyncio.create_task(b.run(stop_b))
        await asyncio.sleep(1.5)
        assert b.held() == []
        assert all(running[j] == ["a"] for j in jobs)  # once across the cluster
        stop_a.set()
        await task_a  # a clean stop hands the leases back
        took = await _until(lambda: b.held() == sorted(jobs), 5)
        assert took < 2.0
        assert all(running[j] == ["b"] for j in jobs)
        stop_b.set()
        await task_b

    asyncio.run(main())
    coordinator.close()


def test_a_silent_holder_is_replaced_within_the_lease(postgres_server: PostgresServer) -> None:
    coordinator = _coordinator(postgres_server)

    async def main() -> None:
        running: dict[str, list[str]] = {}
        a = Keeper([_recording("derive", running)], Leases(coordinator, "a", 2.0))
        b = Keeper([_recording("derive", running)], Leases(coordinator, "b", 2.0))
        await a.tick()  # A takes the lease, then never renews (as if killed -9)
        assert a.held() == ["derive"]
        stop_b = asyncio.Event()
        task_b = asyncio.create_task(b.run(stop_b))
        took = await _until(lambda: b.held() == ["derive"], 6)
        assert took < 2.0 + 2.0 / 3 + 1.0  # the lease, one renewal interval, and some slack
        await a.tick()  # A finds out: its renewal fails and its job stops
        assert a.held() == []
        assert running["derive"] == ["b"]
        stop_b.set()
        await task_b

    asyncio.run(main())
    coordinator.close()


def test_a_failed_job_starts_again_under_the_same_token(postgres_server: PostgresServer) -> None:
    coordinator = _coordinator(postgres_server)
    runs: list[int] = []

    async def flaky(fence: Fence | None, stop: asyncio.Event) -> None:
        assert fence is not None
        runs.append(fence.token)
        if len(runs) == 1:
            raise RuntimeError("the job broke")
        await stop.wait()

    async def main() -> None:
        keeper = Keeper([Job("derive", flaky)], Leases(coordinator, "a", 5.0))
        await keeper.tick()
        await asyncio.sleep(0.1)  # the first run fails
        assert keeper.held() == []
        await keeper.tick()
        assert keeper.held() == ["derive"]
        await keeper._stop_all()

    asyncio.run(main())
    assert runs == [1, 1]
    coordinator.close()
