"""Commit signals: every waiter's event is set by a commit from any thread."""

from __future__ import annotations

import asyncio
import threading

from collector.store.commits import CommitSignal


def test_a_commit_from_another_thread_wakes_every_waiter() -> None:
    signal = CommitSignal()

    async def main() -> None:
        a, b = signal.event(), signal.event()
        threading.Thread(target=signal.fire).start()
        await asyncio.wait_for(asyncio.gather(a.wait(), b.wait()), 5)

    asyncio.run(main())
    assert signal.count == 1
