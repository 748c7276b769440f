"""PostgreSQL notifications reach the callbacks registered for their channel."""

from __future__ import annotations

import threading

from collector.cluster.listen import Notifications
from collector.cluster.postgres import KEYS_CHANNEL
from tests.cluster import PostgresServer
from tests.collector.cluster.test_limits import _coordinator


def test_a_notification_reaches_its_callback(postgres_server: PostgresServer) -> None:
    coordinator = _coordinator(postgres_server)
    got: list[str | None] = []
    arrived = threading.Event()

    def on_keys(payload: str | None) -> None:
        got.append(payload)
        arrived.set()

    listener = Notifications(coordinator)
    listener.on(KEYS_CHANNEL, on_keys)
    listener.start()
    try:
        assert listener.connected.wait(10)
        coordinator.notify(KEYS_CHANNEL, "revoked")
        assert arrived.wait(10)
        assert got == ["revoked"]
    finally:
        listener.stop()
        coordinator.close()
