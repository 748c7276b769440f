"""The lease loop: for each background job, acquire its lease when free, renew it while held,
run the job while it is held and stop it when the lease is lost or cannot be renewed in time.

`collector/service.py` hands it the node's jobs. On a shared store it polls nothing but the
lease table (every `lease_s / 3`); on a single-node store (no `Leases`) every job simply runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from collector.cluster.fence import Fence, LeaseLost, holding
from collector.cluster.leases import Leases

log = logging.getLogger(__name__)

JobRun = Callable[[Fence | None, asyncio.Event], Awaitable[None]]
"""A job's body: run until the event is set; stamp every commit with the fence (None: alone)."""


@dataclass(frozen=True)
class Job:
    name: str
    run: JobRun
    grace_s: float = 120.0
    """How long a stopping job may take to finish its slice before it is cancelled."""


@dataclass
class _Held:
    job: Job
    fence: Fence | None
    stop: asyncio.Event
    task: asyncio.Task[None]
    valid_until: float = 0.0  # monotonic: past this, another node may hold the lease


@dataclass
class KeeperStats:
    acquired: int = 0
    lost: int = 0
    renew_failures: int = 0
    held: dict[str, int] = field(default_factory=dict)  # job -> token


class Keeper:
    def __init__(self, jobs: list[Job], leases: Leases | None) -> None:
        """`jobs` in the order they are stopped in."""
        self._jobs = {job.name: job for job in jobs}
        self._leases = leases
        self._held: dict[str, _Held] = {}
        self.stats = KeeperStats()

    @property
    def jobs(self) -> list[str]:
        return list(self._jobs)

    @property
    def node(self) -> str | None:
        return self._leases.node if self._leases is not None else None

    def held(self) -> list[str]:
        """The jobs this node runs now."""
        return sorted(name for name, h in self._held.items() if not h.task.done())

    async def run(self, stop: asyncio.Event) -> None:
        """Hold what can be held until `stop`; then stop every job and hand its lease back."""
        try:
            if self._leases is None:
                for job in self._jobs.values():
                    self._start(job, None, float("inf"))
                await stop.wait()
                return
            interval = self._leases.lease_s / 3
            while not stop.is_set():
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        finally:
            await self._stop_all()

    async def tick(self) -> None:
        """One round: renew what is held, take what is free, stop what is lost."""
        assert self._leases is not None
        leases = self._leases
        for name, job in self._jobs.items():
            held = self._held.get(name)
            token = held.fence.token if held is not None and held.fence is not None else None
            if held is not None and held.task.done():
                # The job ended (it failed, or its lease was lost): renewing the same token
                # starts it again at once; a lost lease is simply not renewed.
                await self._forget(name)
                held = None
            asked = time.monotonic()
            try:
                got = await asyncio.to_thread(leases.acquire, name, token)
            except Exception as e:
                self.stats.renew_failures += 1
                log.warning("lease %s: cannot reach PostgreSQL (%s)", name, type(e).__name__)
                if held is not None and time.monotonic() >= held.valid_until:
                    log.warning("lease %s: not renewed in time; stopping the job", name)
                    await self._forget(name)
                continue
            # The lease runs from PostgreSQL's now(), which is no earlier than when we asked.
            valid_until = asked + leases.lease_s * 0.9
            if got is None:
                if held is not None:
                    log.warning("lease %s: taken by another node; stopping the job", name)
                    self.stats.lost += 1
                    await self._forget(name)
            elif held is not None and got == token:
                held.valid_until = valid_until
            else:
                if held is not None:  # we lost it and took it back: a new token, a fresh run
                    await self._forget(name)
                fence = Fence(name, got, leases.node)
                self.stats.acquired += 1
                log.info("lease %s: acquired (token %d)", name, got)
                self._start(job, fence, valid_until)

    def _start(self, job: Job, fence: Fence | None, valid_until: float) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(self._guard(job, fence, stop), name=f"job {job.name}")
        self._held[job.name] = _Held(job, fence, stop, task, valid_until)
        if fence is not None:
            self.stats.held[job.name] = fence.token

    async def _guard(self, job: Job, fence: Fence | None, stop: asyncio.Event) -> None:
        try:
            with holding(fence):
                await job.run(fence, stop)
        except LeaseLost as e:
            log.warning("%s", e)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s failed; it starts again at the next lease round", job.name)

    async def _forget(self, name: str) -> None:
        held = self._held.pop(name, None)
        self.stats.held.pop(name, None)
        if held is None:
            return
        await _finish(held)

    async def _stop_all(self) -> None:
        held = {name: self._held[name] for name in self._jobs if name in self._held}
        for h in held.values():
            await _finish(h)
        self._held.clear()
        self.stats.held.clear()
        if self._leases is None:
            return
        for name, h in held.items():
            if h.fence is not None:
                try:
                    await asyncio.to_thread(self._leases.release, name, h.fence.token)
                except Exception as e:
                    log.warning("lease %s: not handed back (%s)", name, type(e).__name__)


async def _finish(held: _Held) -> None:
    """Stop a job: ask it, wait up to its grace, then cancel it."""
    held.stop.set()
    try:
        await asyncio.wait_for(asyncio.shield(held.task), held.job.grace_s)
    except TimeoutError:
        held.task.cancel()
    except (Exception, asyncio.CancelledError):
        pass
    if not held.task.done():
        held.task.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await held.task
