"""PostgreSQL notifications to this node: a thread LISTENing on agentledger's channels (new
snapshots, changed keys, a new price book) that hands each payload to the callbacks registered
for its channel. Blocking in the server's socket, it costs nothing while nothing happens.

`collector/service.py` starts one per node on a shared store; after a lost connection every
callback is called with None ("something may have been missed: reload").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from collector.cluster.postgres import Coordinator

log = logging.getLogger(__name__)

Callback = Callable[[str | None], None]
_RETRY_S = 1.0


class Notifications:
    def __init__(self, coordinator: Coordinator) -> None:
        self._db = coordinator
        self._callbacks: dict[str, list[Callback]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def on(self, channel: str, callback: Callback) -> None:
        """Call `callback(payload)` (in the listener's thread) for each notification; register
        before `start()`."""
        self._callbacks.setdefault(channel, []).append(callback)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                with self._db.connect() as conn:
                    for channel in self._callbacks:
                        conn.execute(f'LISTEN "{channel}"')
                    self.connected.set()
                    if not first:  # notifications sent while we were away are lost
                        self._dispatch_all(None)
                    first = False
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._dispatch(note.channel, note.payload)
            except psycopg.Error as e:
                self.connected.clear()
                log.warning("listening to PostgreSQL failed (%s); retrying", type(e).__name__)
                self._stop.wait(_RETRY_S)

    def _dispatch(self, channel: str, payload: str | None) -> None:
        for callback in self._callbacks.get(channel, []):
            try:
                callback(payload)
            except Exception:
                log.exception("a %s notification's callback failed", channel)

    def _dispatch_all(self, payload: str | None) -> None:
        for channel in self._callbacks:
            self._dispatch(channel, payload)
