"""A node's id: configured, or host-pid."""

from __future__ import annotations

import os
import socket

from collector.cluster.node import node_id


def test_node_id() -> None:
    assert node_id("eu-1") == "eu-1"
    assert node_id(None) == f"{socket.gethostname()}-{os.getpid()}"
