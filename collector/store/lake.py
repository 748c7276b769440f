"""Opening the DuckLake store: where it lives and how it commits (`StoreSettings`), and a
DuckDB connection with the lake attached (catalog in a DuckDB file or PostgreSQL, data in a local
folder or S3), extensions loaded only from their wheels.

`collector/store/writer.py` opens the service's one instance with it; tools and tests open the same
store with it while the server is stopped.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from collector.store.config import (
    POSTGRES,
    S3,
    BatchConfig,
    S3Config,
    StorageConfig,
    parse_conninfo,
)
from collector.store.schema import Column

LAKE = "lake"

ARROW_BATCH_ROWS = 16_384
"""Rows a record batch of a query's Arrow result holds. DuckDB reserves a batch's buffers whole
before filling them: with its default (a million rows) every small read of a change feed
reserved hundreds of MiB, ~28 GB in two minutes of a soak (`docs/benchmarks.md`)."""


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
    memory_limit_mib: int = 256
    threads: int = 0
    s3: S3Config | None = None

    @property
    def shared(self) -> bool:
        """The catalog is in PostgreSQL: other nodes commit to the same store."""
        return self.catalog.startswith(POSTGRES)

    @property
    def remote_data(self) -> bool:
        return self.data_path.startswith(S3)

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
            threads=storage.threads,
            s3=storage.s3,
        )


def extension_path(package: str, name: str) -> str:
    """A signed DuckDB extension shipped by the wheel `package` (pinned to DuckDB's version)."""
    import importlib

    pkg = importlib.import_module(package)
    assert pkg.__file__ is not None
    root = Path(pkg.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    path = root / f"{name}.duckdb_extension"
    if not path.exists():
        raise RuntimeError(f"{name} extension not found at {path}; pin duckdb == its version")
    return str(path)


def ducklake_extension_path() -> str:
    """The signed DuckLake extension shipped by the `duckdb-extension-ducklake` wheel."""
    return extension_path("duckdb_extension_ducklake", "ducklake")


# The PostgreSQL extension's wheel is `duckdb-extension-postgres-scanner`: its file is named for
# the entry point DuckDB looks up (the `-postgres` wheel's is not, and fails to load).
POSTGRES_EXTENSION = ("duckdb_extension_postgres_scanner", "postgres_scanner")
HTTPFS_EXTENSION = ("duckdb_extension_httpfs", "httpfs")


class CatalogUnreachable(RuntimeError):
    """The catalog or the object store could not be opened; the message hides any secret."""


def connect(settings: StoreSettings, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB instance with the lake attached as `lake`; extensions come only from wheels."""
    threads = {"threads": settings.threads} if settings.threads else {}
    con = duckdb.connect(
        config={
            **threads,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            # DuckDB's default is 80% of the machine, and what it reads stays cached up to that:
            # the server's memory grew with every file read under sustained load.
            "memory_limit": f"{settings.memory_limit_mib}MiB",
            # Local files are in the OS page cache already; a second copy costs RSS.
            "enable_external_file_cache": False,
            # Without it the allocator keeps what a query freed: after a merge the server
            # stayed near its peak; with it, RSS is back within seconds (docs/benchmarks.md).
            "allocator_background_threads": True,
            "temp_directory": str(_temp_directory(settings)),
        }
    )
    con.execute(f"LOAD '{ducklake_extension_path()}'")
    attach(con, settings, LAKE, read_only)
    return con


def _temp_directory(settings: StoreSettings) -> Path:
    """Where DuckDB spills what exceeds its memory bound: beside a catalog file, else (a
    PostgreSQL catalog) in the machine's temp folder."""
    if settings.shared:
        return Path(tempfile.gettempdir(), "agentledger-duckdb.tmp")
    return Path(settings.catalog).resolve().parent / "duckdb.tmp"


def attach(
    con: duckdb.DuckDBPyConnection, settings: StoreSettings, alias: str, read_only: bool = False
) -> None:
    """Attach the lake `settings` describes to `con` as `alias`, loading what it needs."""
    if settings.shared:
        con.execute(f"LOAD '{extension_path(*POSTGRES_EXTENSION)}'")
    if settings.remote_data:
        con.execute(f"LOAD '{extension_path(*HTTPFS_EXTENSION)}'")
        con.execute(s3_secret_sql(settings.s3 or S3Config()))
    else:
        Path(settings.data_path).mkdir(parents=True, exist_ok=True)
    opts = f"DATA_PATH '{_sql_str(settings.data_path)}'"
    if read_only:
        opts += ", READ_ONLY"
    try:
        con.execute(f"ATTACH 'ducklake:{_sql_str(settings.catalog)}' AS {alias} ({opts})")
    except duckdb.Error as e:
        if not settings.shared:
            raise
        # The driver's message may quote the connection string, password included.
        raise CatalogUnreachable(
            f"cannot open the PostgreSQL catalog: {hide_secrets(str(e), settings)}"
        ) from None


def probe(settings: StoreSettings) -> list[str]:
    """Whether this node can reach the shared store: the PostgreSQL catalog's server and the S3
    bucket. The problems found, secrets hidden (empty: both answered)."""
    problems = []
    if settings.shared:
        import psycopg

        try:
            conninfo = settings.catalog.removeprefix(POSTGRES)
            with psycopg.connect(conninfo, connect_timeout=10) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as e:
            problems.append(f"PostgreSQL catalog: {hide_secrets(str(e).strip(), settings)}")
    if settings.remote_data:
        con = duckdb.connect(config={"autoinstall_known_extensions": False})
        try:
            con.execute(f"LOAD '{extension_path(*HTTPFS_EXTENSION)}'")
            con.execute(s3_secret_sql(settings.s3 or S3Config()))
            con.execute("SELECT count(*) FROM glob(?)", [settings.data_path + "*"]).fetchall()
        except duckdb.Error as e:
            problems.append(f"S3 data path: {hide_secrets(str(e).strip(), settings)}")
        finally:
            con.close()
    return problems


def s3_secret_sql(s3: S3Config) -> str:
    """DuckDB's CREATE SECRET for the object store (kept in memory only: never persisted)."""
    parts = ["TYPE s3", f"REGION '{_sql_str(s3.region)}'", f"URL_STYLE '{s3.url_style}'"]
    parts.append(f"USE_SSL {'true' if s3.use_ssl else 'false'}")
    for key, value in (
        ("ENDPOINT", s3.endpoint),
        ("KEY_ID", s3.key_id),
        ("SECRET", s3.secret),
        ("SESSION_TOKEN", s3.session_token),
    ):
        if value:
            parts.append(f"{key} '{_sql_str(value)}'")
    return f"CREATE OR REPLACE TEMPORARY SECRET agentledger_s3 ({', '.join(parts)})"


def hide_secrets(text: str, settings: StoreSettings) -> str:
    """`text` with the catalog's password and the S3 key and secret replaced by ***."""
    hidden = []
    if settings.shared:
        try:
            hidden.append(parse_conninfo(settings.catalog.removeprefix(POSTGRES)).get("password"))
        except ValueError:
            hidden.append(settings.catalog)
    if settings.s3 is not None:
        hidden += [settings.s3.secret, settings.s3.key_id, settings.s3.session_token]
    for value in hidden:
        if value:
            text = text.replace(value, "***")
    return text


def add_new_columns(
    cur: duckdb.DuckDBPyConnection, table: str, columns: Sequence[Column]
) -> list[str]:
    """Add to the lake's `table` the columns of `columns` it lacks, and name them: a store made
    before a column existed gains it on start. ALTER TABLE appends, and rows are inserted by
    position, so a column added after a release must be the last of its list."""
    have = {r[0] for r in cur.execute(f"DESCRIBE {LAKE}.{table}").fetchall()}
    added = [c for c in columns if c.name not in have]
    for column in added:
        cur.execute(f"ALTER TABLE {LAKE}.{table} ADD COLUMN {column.name} {column.sql}")
    return [c.name for c in added]


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
