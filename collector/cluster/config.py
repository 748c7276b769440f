"""The `cluster:` config section (`ClusterConfig`) and the checks a shared store puts on the rest
of the config (`cluster_issues`): read by `collector/config.py`, used by `collector/service.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.configparse import ConfigIssue, bounds
from collector.store.config import StorageConfig


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """How nodes sharing a PostgreSQL catalog split the background work. Ignored by a node with
    a DuckDB-file catalog (it is alone by construction and runs every job itself)."""

    lease_s: int = field(default=10, metadata=bounds(ge=2, le=600))
    """A dead node's background work is taken over by another node within about this long."""
    node_id: str | None = None
    """This node's name in leases, logs and /metrics; None: `<hostname>-<pid>`."""

    def validate(self) -> list[ConfigIssue]:
        if self.node_id is not None and not (0 < len(self.node_id) <= 200):
            return [ConfigIssue("node_id", "must be 1 to 200 characters")]
        return []


def cluster_issues(storage: StorageConfig, secrets_key: str | None) -> list[ConfigIssue]:
    """What a PostgreSQL catalog needs elsewhere in the config: one sealing key for every node."""
    if not storage.shared or secrets_key is not None:
        return []
    message = (
        "missing: a PostgreSQL catalog is shared by many nodes, so what one node seals every "
        "node must open: set secrets.key from the config or the environment "
        "(e.g. ${env:AGENTLEDGER_SECRET_KEY}; generate one: openssl rand -base64 32), "
        "not the per-node file <storage.path>/secret.key"
    )
    return [ConfigIssue("secrets.key", message)]
