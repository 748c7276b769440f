"""Schema upkeep of the derived tables on start: columns and tables added since a store was
created, filled for the runs derived before them. Called by `derive.py` and the read benchmark.
"""

from __future__ import annotations

import itertools

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


# What the run assembler writes to `run_tools` (`processors.runs.rows.run_tools`), from the
# stored runs that started in [$lo, $hi) µs, their `span_runs` rows and the tool spans: one row
# a span, even if ingest has not yet dropped a duplicate of it. A run's spans start no earlier
# than the run, which prunes the older files of `span_runs`.
_FILL_RUN_TOOLS = """INSERT INTO run_tools BY NAME
WITH r AS (
    SELECT org, run_id, trace_id, workflow_name, started_at FROM runs
    WHERE epoch_us(started_at) >= $lo AND epoch_us(started_at) < $hi
), t AS (
    SELECT DISTINCT ON (sr.org, sr.trace_id, sr.span_id) sr.org, sr.run_id, s.span_id,
        s.start_time_unix_nano, coalesce(s.tool_name, s.name) AS tool,
        coalesce(s.is_error, false) OR coalesce(s.status_code = 2, false) AS failed,
        (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6 AS latency_ms
    FROM span_runs sr
    JOIN r ON r.org = sr.org AND r.run_id = sr.run_id
    JOIN spans s ON s.org = sr.org AND s.trace_id = sr.trace_id AND s.span_id = sr.span_id
    WHERE sr.span_type = 'tool' AND sr.start_time_unix_nano >= $lo * 1000
)
SELECT r.org, r.workflow_name, r.started_at, r.trace_id, r.run_id, t.tool, t.failed,
    t.latency_ms,
    row_number() OVER (PARTITION BY r.org, r.run_id, t.tool
                       ORDER BY t.start_time_unix_nano, t.span_id) = 1 AS first_of_tool
FROM t JOIN r ON r.org = t.org AND r.run_id = t.run_id"""

# Runs filled by one statement: its joins and window hold about this many runs' tool calls,
# within DuckDB's memory bound (`storage.memory_limit_mib`) on a store of any size.
FILL_CHUNK_RUNS = 100_000


def fill_run_tools(cur: duckdb.DuckDBPyConnection, chunk_runs: int = FILL_CHUNK_RUNS) -> int:
    """Writes the `run_tools` rows of every stored run (for a store whose runs were derived
    before the table existed), by slices of start time of about `chunk_runs` runs; returns how
    many rows it wrote. Once, in the transaction that creates the table: a crash leaves
    neither."""
    found = cur.execute("SELECT count(*) FROM runs").fetchone()
    runs = int(found[0]) if found else 0
    if not runs:
        return 0
    pieces = -(-runs // chunk_runs)
    cuts: list[int] = []
    if pieces > 1:
        # Approximate quantiles (bounded memory): a slice only needs to be about the size.
        row = cur.execute(
            "SELECT approx_quantile(epoch_us(started_at), ?::FLOAT[]) FROM runs",
            [[i / pieces for i in range(1, pieces)]],
        ).fetchone()
        cuts = sorted({int(c) for c in row[0]}) if row and row[0] else []
    # Past every time a span can carry (OTLP times are unsigned ns, clamped to BIGINT), and
    # small enough that `$lo * 1000` stays a BIGINT.
    bounds = [-(10**15), *cuts, 10**16]
    written = 0
    for lo, hi in itertools.pairwise(bounds):
        done = cur.execute(_FILL_RUN_TOOLS, {"lo": lo, "hi": hi}).fetchone()
        written += int(done[0]) if done else 0
    return written
