"""Leases in PostgreSQL: which node holds each background job, until when, under which fencing
token. Times are PostgreSQL's clock (`now()`), so nodes' clocks never have to agree.

`collector/cluster/keeper.py` acquires and renews them; a job's commits carry the token
(`collector/cluster/fence.py`) and the catalog refuses a commit whose token is no longer current.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.cluster.postgres import Coordinator

# Take a free or expired lease (a new token), or renew our own (the same token).
_ACQUIRE = """
INSERT INTO agentledger_leases AS l (job, holder, token, expires_at, acquired_at)
VALUES (%(job)s, %(node)s, 1, now() + make_interval(secs => %(ttl)s), now())
ON CONFLICT (job) DO UPDATE SET
  token = CASE WHEN l.holder = EXCLUDED.holder AND l.token = %(token)s
               THEN l.token ELSE l.token + 1 END,
  acquired_at = CASE WHEN l.holder = EXCLUDED.holder AND l.token = %(token)s
                     THEN l.acquired_at ELSE now() END,
  holder = EXCLUDED.holder,
  expires_at = EXCLUDED.expires_at
WHERE l.expires_at < now() OR (l.holder = EXCLUDED.holder AND l.token = %(token)s)
RETURNING token
"""

# A clean stop hands the job on at once instead of after the lease runs out.
_RELEASE = """
UPDATE agentledger_leases SET expires_at = now() - interval '1 second'
WHERE job = %(job)s AND holder = %(node)s AND token = %(token)s
"""


@dataclass(frozen=True)
class LeaseRow:
    job: str
    holder: str
    token: int
    expired: bool


class Leases:
    """This node's calls on the lease table."""

    def __init__(self, coordinator: Coordinator, node: str, lease_s: float) -> None:
        self._db = coordinator
        self.node = node
        self.lease_s = lease_s

    def acquire(self, job: str, token: int | None = None) -> int | None:
        """Renew the lease on `job` held under `token`, or take it if it is free or expired:
        the token now held, or None when another node holds it."""
        rows = self._db.execute(
            _ACQUIRE,
            {"job": job, "node": self.node, "ttl": float(self.lease_s), "token": token or -1},
        )
        return int(rows[0][0]) if rows else None

    def release(self, job: str, token: int) -> None:
        self._db.execute(_RELEASE, {"job": job, "node": self.node, "token": token})

    def all(self) -> list[LeaseRow]:
        rows = self._db.execute(
            "SELECT job, holder, token, expires_at < now() FROM agentledger_leases ORDER BY job"
        )
        return [LeaseRow(str(j), str(h), int(t), bool(x)) for j, h, t, x in rows]
