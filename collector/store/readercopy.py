"""A read-only copy of the store's catalog for readers in other processes while the server runs.

The DuckDB catalog file admits one process; every `storage.reader_copy_interval_s` the server
copies the catalog (a consistent read) to `catalog.reader.ducklake` beside it, atomically, so
DuckDB (and Polars or Spark through it) can attach that copy READ_ONLY with the same data path.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from collector.store.lake import LAKE
from collector.store.writer import Store

READER_NAME = "catalog.reader.ducklake"


def reader_path(store: Store) -> Path:
    return Path(store.settings.catalog).with_name(READER_NAME)


def publish(store: Store) -> Path:
    """Copies the catalog as of now to the reader copy (replaced atomically); returns its path.

    Runs on a reader cursor, not the writer thread: the copy is one consistent snapshot of the
    catalog database, and ingest commits go on meanwhile."""
    target = reader_path(store)
    tmp = target.with_name(target.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    cur = store.cursor()
    try:
        cur.execute(f"ATTACH '{tmp}' AS reader_copy")
        try:
            cur.execute(f"COPY FROM DATABASE __ducklake_metadata_{LAKE} TO reader_copy")
        finally:
            cur.execute("DETACH reader_copy")
    finally:
        cur.close()
    with open(tmp, "rb") as f:  # durable before it replaces the last good copy
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return target
