"""Moving a single-node store up to a shared one: copy every table of a DuckDB-file store into an
empty store whose catalog is in PostgreSQL and data in S3 (`agentledger store migrate`).

DuckLake's own `COPY FROM DATABASE` copies the tables (their current rows, not their history);
the derived-processing watermarks, which name snapshots of the old store, are moved to the new
store's snapshot, and the row counts of both are compared table by table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from collector.store.lake import LAKE, StoreSettings, attach, connect

SOURCE = "source_lake"
# What each watermark follows (collector/runs/): the run deriver's (`runs`) the spans, every run
# consumer's the runs. A watermark behind a change there is work not yet done, which a copy of
# the tables would lose.
_DERIVER = "runs"


class MigrateRefused(Exception):
    """The copy was not started (the message says why and what to do)."""


@dataclass
class MigrateResult:
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # table -> (source, target)

    @property
    def matches(self) -> bool:
        return all(a == b for a, b in self.counts.values())


def migrate(source: StoreSettings, target: StoreSettings) -> MigrateResult:
    """Copy `source` (the server stopped) into the empty store `target`; verify by row counts."""
    con = connect(target)
    try:
        attach(con, source, SOURCE, read_only=True)
        tables = _tables(con, SOURCE)
        if _tables(con, LAKE):
            raise MigrateRefused("the target store already has tables: migrate into an empty one")
        _check_caught_up(con, tables)
        con.execute("BEGIN")
        con.execute(f"COPY FROM DATABASE {SOURCE} TO {LAKE}")
        con.execute("COMMIT")
        if "watermarks" in tables:
            # Everything copied is derived already (checked above): start every consumer at the
            # new store's current snapshot.
            con.execute(
                f"UPDATE {LAKE}.watermarks SET snapshot_id = "
                f"(SELECT id FROM {LAKE}.current_snapshot()), updated_at = now()"
            )
        result = MigrateResult()
        for table in tables:
            result.counts[table] = (_count(con, SOURCE, table), _count(con, LAKE, table))
        return result
    finally:
        con.close()


def _tables(con: duckdb.DuckDBPyConnection, catalog: str) -> list[str]:
    rows = con.execute(
        """SELECT table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY 1""",
        [catalog],
    ).fetchall()
    return [str(r[0]) for r in rows]


def _count(con: duckdb.DuckDBPyConnection, catalog: str, table: str) -> int:
    found = con.execute(f'SELECT count(*) FROM {catalog}.main."{table}"').fetchone()
    return int(found[0]) if found else 0


def _check_caught_up(con: duckdb.DuckDBPyConnection, tables: list[str]) -> None:
    if "watermarks" not in tables:
        return
    current = con.execute(f"SELECT id FROM {SOURCE}.current_snapshot()").fetchone()
    marks = con.execute(
        f"SELECT name, max(snapshot_id) FROM {SOURCE}.watermarks GROUP BY name"
    ).fetchall()
    for name, mark in marks:
        if current is None or mark is None or mark >= current[0]:
            continue
        followed = "spans" if name == _DERIVER else "runs"
        for table in (t for t in (followed,) if t in tables):
            changed = con.execute(
                f"SELECT count(*) FROM ducklake_table_changes('{SOURCE}', 'main', ?, ?, ?)",
                [table, int(mark) + 1, int(current[0])],
            ).fetchone()
            if changed and changed[0]:
                raise MigrateRefused(
                    f"derived processing ({name}) has not read the newest {table} yet: start "
                    "the server once, let it catch up, stop it (SIGTERM), then migrate"
                )
