"""This node's id: the name it holds leases under and shows in logs, `/metrics` and `/health`.

Built once by `collector/service.py` from `cluster.node_id` (default `<hostname>-<pid>`, unique per
process, so a restarted node is a new holder and never mistakes an old lease for its own).
"""

from __future__ import annotations

import os
import socket


def node_id(configured: str | None = None) -> str:
    if configured:
        return configured
    return f"{socket.gethostname()}-{os.getpid()}"
