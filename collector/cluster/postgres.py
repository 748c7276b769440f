"""The node's own connection to the PostgreSQL server that holds the DuckLake catalog, and the
tables and triggers agentledger adds beside DuckLake's: leases, and the catalog triggers that fence
stale commits and announce new snapshots.

`collector/service.py` opens one `Coordinator` per node on a shared store; leases
(`collector/cluster/leases.py`) and the change-feed wake-up (`collector/cluster/wake.py`) use it.
PostgreSQL is the one coordination service: nothing here is a consensus of our own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import psycopg

from collector.store.conflict import FENCE_REFUSED

log = logging.getLogger(__name__)

COMMITS_CHANNEL = "agentledger_commits"
"""NOTIFY channel: the id of every snapshot DuckLake commits, from a trigger on its catalog."""
KEYS_CHANNEL = "agentledger_keys"
"""NOTIFY channel: API keys or workspace tokens were created or revoked on some node."""

_TABLES = (
    """CREATE TABLE IF NOT EXISTS agentledger_leases (
         job text PRIMARY KEY,
         holder text NOT NULL,
         token bigint NOT NULL,
         expires_at timestamptz NOT NULL,
         acquired_at timestamptz NOT NULL)""",
    # Shared rate limits (collector/cluster/limits.py): one row per admitted request.
    """CREATE TABLE IF NOT EXISTS agentledger_rate_log (
         bucket text NOT NULL,
         at timestamptz NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS agentledger_rate_log_bucket ON agentledger_rate_log (bucket, at)",
    # Idempotency claims (collector/cluster/claims.py).
    """CREATE TABLE IF NOT EXISTS agentledger_claims (
         scope text NOT NULL,
         org text NOT NULL,
         key text NOT NULL,
         holder text NOT NULL,
         claimed_at timestamptz NOT NULL,
         done boolean NOT NULL,
         PRIMARY KEY (scope, org, key))""",
)

# A sliding-window log per bucket, serialised per bucket by an advisory lock: 0 admits the
# request, else the seconds until the oldest admitted one leaves the window. Buckets that went
# quiet are swept now and then (windows are at most minutes long).
_ADMIT_FUNCTION = """
CREATE OR REPLACE FUNCTION agentledger_admit(b text, lim int, win double precision)
RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := clock_timestamp();
  n int;
  oldest timestamptz;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(b, 0));
  DELETE FROM agentledger_rate_log WHERE bucket = b AND at <= t - make_interval(secs => win);
  SELECT count(*), min(at) INTO n, oldest FROM agentledger_rate_log WHERE bucket = b;
  IF random() < 0.001 THEN
    DELETE FROM agentledger_rate_log WHERE at < t - interval '1 hour';
  END IF;
  IF n < lim THEN
    INSERT INTO agentledger_rate_log VALUES (b, t);
    RETURN 0;
  END IF;
  RETURN greatest(extract(epoch FROM oldest + make_interval(secs => win) - t), 0.001);
END $$"""

# The fence: DuckLake writes a commit's metadata (and its `ducklake_snapshot_changes` row, whose
# commit_extra_info a fenced transaction sets) in one PostgreSQL transaction. This trigger reads
# the lease row in that same transaction (FOR SHARE: a takeover waits for the commit, or the
# commit sees the takeover), and aborts the whole commit when the token is no longer current.
_FENCE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION agentledger_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  fence jsonb;
  held bigint;
BEGIN
  IF NEW.commit_extra_info IS NULL OR left(NEW.commit_extra_info, 9) <> '{{"fence":' THEN
    RETURN NEW;
  END IF;
  fence := NEW.commit_extra_info::jsonb -> 'fence';
  SELECT token INTO held FROM agentledger_leases WHERE job = fence ->> 'job' FOR SHARE;
  IF held IS DISTINCT FROM (fence ->> 'token')::bigint THEN
    RAISE EXCEPTION '{FENCE_REFUSED}: the lease of % moved to token %; token % is stale',
      fence ->> 'job', held, fence ->> 'token' USING ERRCODE = 'P0001';
  END IF;
  RETURN NEW;
END $$"""

_NOTIFY_FUNCTION = f"""
CREATE OR REPLACE FUNCTION agentledger_announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{COMMITS_CHANNEL}', NEW.snapshot_id::text);
  RETURN NULL;
END $$"""

_FUNCTIONS = (_FENCE_FUNCTION, _NOTIFY_FUNCTION, _ADMIT_FUNCTION)

# (trigger, table, definition): created once; replacing a trigger would lock DuckLake's table
# against other nodes' commits, replacing the function it calls does not.
_TRIGGERS = (
    (
        "agentledger_fence",
        "ducklake_snapshot_changes",
        """CREATE TRIGGER agentledger_fence BEFORE INSERT ON ducklake_snapshot_changes
             FOR EACH ROW EXECUTE FUNCTION agentledger_fence()""",
    ),
    (
        "agentledger_announce",
        "ducklake_snapshot",
        """CREATE TRIGGER agentledger_announce AFTER INSERT ON ducklake_snapshot
             FOR EACH ROW EXECUTE FUNCTION agentledger_announce()""",
    ),
)

# Every node installs the same things at start; one at a time (an arbitrary, fixed lock number).
_INSTALL_LOCK = 0x61676C64


class Coordinator:
    """One autocommit connection to the catalog's PostgreSQL, shared by this node's threads
    (statements are serialised; each is short). Reconnects after the server went away."""

    def __init__(self, conninfo: str, *, application_name: str = "agentledger") -> None:
        self._conninfo = conninfo
        self._application_name = application_name
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection of its own (for LISTEN, or a test's second client)."""
        return psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=10,
            application_name=self._application_name,
        )

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[Any]:
        """Run one statement in its own transaction; the rows it returns (empty for none)."""
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self.connect()
            try:
                cur = self._conn.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []
            except psycopg.OperationalError:
                # The connection is gone (server restart, network): the next call reconnects.
                self._conn.close()
                self._conn = None
                raise

    def prepare(self, *, catalog: bool = True) -> None:
        """Create agentledger's tables and functions and, with `catalog`, the triggers on
        DuckLake's catalog tables (which must exist: call after the store is open).
        Idempotent; safe while other nodes run."""
        with self.connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_INSTALL_LOCK])
            for sql in (*_TABLES, *_FUNCTIONS):
                conn.execute(sql)
            for name, table, create in _TRIGGERS if catalog else ():
                found = conn.execute(
                    "SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = to_regclass(%s)",
                    [name, table],
                ).fetchone()
                if found is None:
                    conn.execute(create)

    def notify(self, channel: str, payload: str = "") -> None:
        self.execute("SELECT pg_notify(%s, %s)", [channel, payload])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
