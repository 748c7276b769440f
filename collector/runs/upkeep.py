"""Schema upkeep of the derived tables on start: columns added since a store was created, and
the integer run keys of runs derived before those columns existed. Called by `derive.py`.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from collector.store.keys import run_key
from collector.store.lake import LAKE
from collector.store.schema import DERIVED_TABLES


def add_run_keys(cur: duckdb.DuckDBPyConnection) -> int:
    """Fills `run_key` and `parent_run_key` of runs derived before those columns existed (or
    written by hand, as the read benchmark does); returns how many rows it filled."""
    missing = cur.execute(
        "SELECT org, run_id, parent_run_id FROM runs WHERE run_key IS NULL"
    ).fetchall()
    if not missing:
        return 0
    keys = pa.table(
        {
            "org": [m[0] for m in missing],
            "run_id": [m[1] for m in missing],
            "k": pa.array([run_key(m[0], m[1]) for m in missing], pa.int64()),
            "pk": pa.array([run_key(m[0], m[2]) for m in missing], pa.int64()),
        }
    )
    cur.register("_keys", keys)
    cur.execute(
        """UPDATE runs SET run_key = _keys.k, parent_run_key = _keys.pk FROM _keys
           WHERE runs.org = _keys.org AND runs.run_id = _keys.run_id AND runs.run_key IS NULL"""
    )
    cur.unregister("_keys")
    return len(missing)


def add_missing_columns(cur: duckdb.DuckDBPyConnection, name: str) -> list[str]:
    """Columns of a derived table added to the schema since the stored table was created."""
    have = {r[0] for r in cur.execute(f"DESCRIBE {LAKE}.{name}").fetchall()}
    added = [c for c in DERIVED_TABLES[name] if c.name not in have]
    for column in added:
        cur.execute(f"ALTER TABLE {LAKE}.{name} ADD COLUMN {column.name} {column.sql}")
    return [c.name for c in added]
