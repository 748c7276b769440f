"""Opening the DuckLake store: where it lives and how it commits (`StoreSettings`), and a
DuckDB connection with the lake attached, extensions loaded only from their wheels.

`collector/store/writer.py` opens the service's one instance with it; tools and tests open the same
store with it while the server is stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from collector.store.config import BatchConfig, StorageConfig

LAKE = "lake"


@dataclass(frozen=True)
class StoreSettings:
    """Where the store lives and how it commits (built from `storage:` in the config)."""

    catalog: str
    data_path: str
    commit_interval_s: float = 0.1
    commit_max_rows: int = 50_000
    dedup_window_s: float = 900.0
    fsync: bool = True
    query_timeout_s: float = 30.0
    memory_limit_mib: int = 512

    @classmethod
    def from_config(cls, storage: StorageConfig, batch: BatchConfig | None = None) -> StoreSettings:
        """The store as `storage:` describes it; a pipeline's `batch` processor, if any, sets the
        group commit instead."""
        return cls(
            catalog=storage.catalog_path(),
            data_path=storage.data_path_resolved(),
            commit_interval_s=(
                batch.commit_interval_s() if batch else storage.commit_interval_ms / 1000
            ),
            commit_max_rows=batch.commit_max_rows() if batch else storage.commit_max_rows,
            dedup_window_s=float(storage.dedup_window_s),
            fsync=storage.fsync,
            memory_limit_mib=storage.memory_limit_mib,
        )


def ducklake_extension_path() -> str:
    """The signed DuckLake extension shipped by the `duckdb-extension-ducklake` wheel."""
    import duckdb_extension_ducklake as pkg

    root = Path(pkg.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    path = root / "ducklake.duckdb_extension"
    if not path.exists():
        raise RuntimeError(f"DuckLake extension not found at {path}; pin duckdb == its version")
    return str(path)


def connect(settings: StoreSettings, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB instance with the lake attached as `lake`; extensions come only from wheels."""
    con = duckdb.connect(
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            # DuckDB's default is 80% of the machine, and what it reads stays cached up to that:
            # the server's memory grew with every file read under sustained load.
            "memory_limit": f"{settings.memory_limit_mib}MB",
            # Local files are in the OS page cache already; a second copy costs RSS.
            "enable_external_file_cache": False,
            "temp_directory": str(Path(settings.catalog).resolve().parent / "duckdb.tmp"),
        }
    )
    con.execute(f"LOAD '{ducklake_extension_path()}'")
    Path(settings.data_path).mkdir(parents=True, exist_ok=True)
    opts = f"DATA_PATH '{_sql_str(settings.data_path)}'"
    if read_only:
        opts += ", READ_ONLY"
    con.execute(f"ATTACH 'ducklake:{_sql_str(settings.catalog)}' AS {LAKE} ({opts})")
    return con


def _sql_str(s: str) -> str:
    return s.replace("'", "''")


# Tables whose change feed derived processing reads; ingest gives them statistics soon anyway.
_FOLLOWED = frozenset({"spans", "logs", "metrics", "runs", "span_runs"})


def prime_table_stats(cur: duckdb.DuckDBPyConnection) -> list[str]:
    """Gives every table that has never held a row its (empty) statistics, by inserting and
    deleting one row in the same transaction; returns the tables primed.

    Why: DuckLake plans a query over a never-written table far more slowly than over an empty
    one with statistics (measured here: a 42-column table, 70-90 ms against 3-13 ms), and the
    run detail alone reads four such tables (alert events, ROI events, evaluations) on a store
    where they are still empty. Nobody sees the row: it never commits.
    """
    meta = f"__ducklake_metadata_{LAKE}"
    names = [
        str(r[0])
        for r in cur.execute(
            f"""SELECT t.table_name FROM {meta}.ducklake_table t
                WHERE t.end_snapshot IS NULL AND t.table_id NOT IN
                    (SELECT table_id FROM {meta}.ducklake_table_stats)
                ORDER BY 1"""
        ).fetchall()
    ]
    primed = []
    for name in names:
        if name in _FOLLOWED:
            continue  # change feeds read these: not even an uncommitted row goes in
        table = f'{LAKE}."{name}"'
        found = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
        if found is None or found[0]:
            continue  # rows without statistics (inlined): nothing to do, and nothing to lose
        # This transaction is the store's only writer, so the table's one row is ours.
        cur.execute(f"INSERT INTO {table} DEFAULT VALUES")
        cur.execute(f"DELETE FROM {table}")
        primed.append(name)
    return primed
