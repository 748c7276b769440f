"""Watermarks of derived processing: the snapshot each change-feed consumer (the run deriver,
the run follower's consumers) has read up to, kept in the store's `watermarks` table.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from collector.store.writer import Store


def read_watermark(cur: duckdb.DuckDBPyConnection, name: str) -> int | None:
    """The snapshot a derived-processing consumer has read up to (None before its first step),
    read in `cur`'s transaction."""
    return read_watermarks(cur, [name]).get(name)


def stored_watermark(store: Store, name: str) -> int:
    """`read_watermark` on a reader cursor of its own, -1 before the first step."""
    cur = store.cursor()
    try:
        found = read_watermark(cur, name)
    finally:
        cur.close()
    return -1 if found is None else found


def write_watermark(cur: duckdb.DuckDBPyConnection, name: str, snapshot: int) -> None:
    write_watermarks(cur, [name], snapshot)


def read_watermarks(cur: duckdb.DuckDBPyConnection, names: Sequence[str]) -> dict[str, int]:
    """The snapshot each of these consumers has read up to, read in `cur`'s transaction in one
    statement; a consumer before its first step is absent."""
    rows = cur.execute(
        "SELECT name, max(snapshot_id) FROM watermarks WHERE name IN (SELECT unnest(?)) "
        "GROUP BY name",
        [list(names)],
    ).fetchall()
    return {str(name): int(mark) for name, mark in rows if mark is not None}


def write_watermarks(cur: duckdb.DuckDBPyConnection, names: Sequence[str], snapshot: int) -> None:
    """Set these consumers' watermarks to `snapshot` in two statements, whatever their number:
    each statement on the lake costs the writer thread milliseconds under load."""
    cur.execute("DELETE FROM watermarks WHERE name IN (SELECT unnest(?))", [list(names)])
    cur.execute("INSERT INTO watermarks SELECT unnest(?), ?, now()", [sorted(set(names)), snapshot])
