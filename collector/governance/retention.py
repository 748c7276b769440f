"""Retention: how long each kind of data is kept, per org, and the job that deletes what expired.

TTLs come from `retention:` in the config (defaults and per-org overrides) and from the
`retention_settings` table (per-org overrides set through `/api/retention`, which win); the job
deletes through the store's writer thread, then `compaction.reclaim` frees the disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import duckdb

from collector.configparse import ConfigIssue, bounds
from collector.store.lake import LAKE
from collector.store.writer import Store

log = logging.getLogger(__name__)

_NON_CALL = "(span_type IS NULL OR span_type NOT IN ('llm', 'tool'))"
_LOG_TIME = "CASE WHEN time_unix_nano > 0 THEN time_unix_nano ELSE observed_time_unix_nano END"


@dataclass(frozen=True)
class Target:
    """One table a kind of data lives in: the row's time (an SQL expression over its columns,
    nanoseconds since the epoch or a TIMESTAMPTZ) and which of its rows are of the kind."""

    table: str
    time: str
    unit: Literal["ns", "ts"]
    where: str = "TRUE"


# The one map of what retention (and the disk cap, and export) know about: a new table is a line.
# Every span is of exactly one kind; a table that does not exist (yet) is skipped.
KINDS: dict[str, tuple[Target, ...]] = {
    "spans": (Target("spans", "start_time_unix_nano", "ns", _NON_CALL),),
    "llm_calls": (Target("spans", "start_time_unix_nano", "ns", "span_type = 'llm'"),),
    "tool_calls": (Target("spans", "start_time_unix_nano", "ns", "span_type = 'tool'"),),
    "runs": (
        Target("runs", "started_at", "ts"),
        Target("span_runs", "start_time_unix_nano", "ns"),
        Target("run_tools", "started_at", "ts"),
    ),
    "roi_events": (Target("roi_events", "occurred_at", "ts"),),
    "capture_events": (
        Target("mcp_events", "received_at", "ts"),
        Target("mcp_sessions", "received_at", "ts"),
    ),
    "logs": (Target("eval_logs", "created_at", "ts"),),
    "alert_events": (Target("alert_events", "created_at", "ts"),),
    "otlp_logs": (Target("logs", _LOG_TIME, "ns"),),
    "metrics": (Target("metrics", "time_unix_nano", "ns"),),
}
SETTINGS_TABLE = "retention_settings"
_DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class RetentionConfig:
    """`retention:` — TTLs in days per kind (0 or absent: kept forever), per-org overrides, and
    how often the job runs. Orgs' overrides set through `/api/retention` win over these."""

    interval_s: int = field(default=3600, metadata=bounds(ge=1))
    defaults: dict[str, float] = field(default_factory=dict)
    orgs: dict[str, dict[str, float]] = field(default_factory=dict)
    cleanup_grace_s: int = field(default=60, metadata=bounds(ge=0))
    """Files of expired snapshots are removed this long after expiry: queries in flight finish."""

    def validate(self) -> list[ConfigIssue]:
        issues = _ttl_issues("defaults", self.defaults)
        for org, ttls in self.orgs.items():
            issues += _ttl_issues(f"orgs.{org}", ttls)
        return issues

    def ttl_days(self, org: str, kind: str) -> float:
        return self.orgs.get(org, {}).get(kind, self.defaults.get(kind, 0.0))


def _ttl_issues(path: str, ttls: dict[str, float]) -> list[ConfigIssue]:
    issues = []
    for kind, days in ttls.items():
        if kind not in KINDS:
            message = f"unknown kind of data (known: {', '.join(KINDS)})"
            issues.append(ConfigIssue(f"{path}.{kind}", message))
        elif days < 0:
            issues.append(ConfigIssue(f"{path}.{kind}", "must be >= 0 (0 keeps forever)"))
    return issues


def create_tables(store: Store) -> None:
    store.call(
        lambda cur: cur.execute(
            f"""CREATE TABLE IF NOT EXISTS {LAKE}.{SETTINGS_TABLE} (
                  org VARCHAR, kind VARCHAR, ttl_days DOUBLE, updated_at TIMESTAMPTZ)"""
        )
    )


def stored_overrides(store: Store) -> dict[str, dict[str, float]]:
    """org → kind → days, as set through the admin API."""
    out: dict[str, dict[str, float]] = {}
    for org, kind, days in store.query(f"SELECT org, kind, ttl_days FROM {SETTINGS_TABLE}"):
        out.setdefault(str(org), {})[str(kind)] = float(days)
    return out


def set_overrides(store: Store, org: str, changes: dict[str, float | None]) -> None:
    """Set (a number of days) or clear (None: back to the config's value) an org's TTLs."""

    def write(cur: duckdb.DuckDBPyConnection) -> None:
        for kind, days in changes.items():
            cur.execute(f"DELETE FROM {SETTINGS_TABLE} WHERE org = ? AND kind = ?", [org, kind])
            if days is not None:
                cur.execute(
                    f"INSERT INTO {SETTINGS_TABLE} VALUES (?, ?, ?, now())", [org, kind, days]
                )

    store.call(write)


def effective(
    config: RetentionConfig, stored: dict[str, dict[str, float]], org: str
) -> dict[str, dict[str, object]]:
    """kind → {"ttl_days", "source"} for one org: stored override, config override, default."""
    out: dict[str, dict[str, object]] = {}
    for kind in KINDS:
        if kind in stored.get(org, {}):
            out[kind] = {"ttl_days": stored[org][kind], "source": "org"}
        elif kind in config.orgs.get(org, {}):
            out[kind] = {"ttl_days": config.orgs[org][kind], "source": "config_org"}
        else:
            out[kind] = {"ttl_days": config.defaults.get(kind, 0.0), "source": "default"}
    return out


def existing_tables(store: Store) -> set[str]:
    rows = store.query("SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [LAKE])
    return {str(r[0]) for r in rows}


def cutoff_value(target: Target, cutoff: datetime) -> int | datetime:
    if target.unit == "ns":
        return (cutoff - _EPOCH) // timedelta(microseconds=1) * 1000
    return cutoff


def delete_older(
    store: Store,
    target: Target,
    cutoff: datetime,
    orgs: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
) -> int:
    """Delete the target's rows older than `cutoff` of `orgs` (None: every org but `exclude`),
    in one transaction on the writer thread; returns how many rows went."""
    sql = f"DELETE FROM {target.table} WHERE {target.where} AND {target.time} < ?"
    params: list[object] = [cutoff_value(target, cutoff)]
    if orgs is not None:
        sql += " AND org IN (SELECT unnest(?::VARCHAR[]))"
        params.append(sorted(orgs))
    elif exclude:
        sql += " AND org NOT IN (SELECT unnest(?::VARCHAR[]))"
        params.append(sorted(exclude))

    def run(cur: duckdb.DuckDBPyConnection) -> int:
        found = cur.execute(sql, params).fetchone()
        return int(found[0]) if found else 0

    return store.call(run)


@dataclass
class RetentionResult:
    deleted: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def apply(store: Store, config: RetentionConfig, now: datetime | None = None) -> RetentionResult:
    """Delete every row past its org's TTL for its kind. One transaction per (target, TTL)."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    stored = stored_overrides(store)
    orgs = set(stored) | set(config.orgs)
    tables = existing_tables(store)
    result = RetentionResult()
    for kind, targets in KINDS.items():
        default = config.defaults.get(kind, 0.0)
        # Orgs whose TTL for this kind differs from the default are handled one by one.
        special: dict[float, set[str]] = {}
        for org in orgs:
            days = stored.get(org, {}).get(kind, config.orgs.get(org, {}).get(kind, default))
            if days != default:
                special.setdefault(days, set()).add(org)
        others = set().union(*special.values()) if special else set()
        for target in targets:
            if target.table not in tables:
                continue
            n = 0
            if default > 0:
                n += delete_older(store, target, now - default * _DAY, exclude=others)
            for days, group in special.items():
                if days > 0:
                    n += delete_older(store, target, now - days * _DAY, orgs=group)
            result.deleted[kind] = result.deleted.get(kind, 0) + n
    result.seconds = time.perf_counter() - started
    total = sum(result.deleted.values())
    if total:
        log.info(
            "retention deleted %d rows in %.2fs (%s)",
            total,
            result.seconds,
            ", ".join(f"{k} {v}" for k, v in result.deleted.items() if v),
        )
    return result
