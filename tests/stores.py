"""A store laid out as the service lays it out at start, for tests that read it in process.

Opens a Store in a temp dir with the derived tables, the MCP capture tables and the views
(`collector/read/views.py`), created in the service's order, so query tests see the same tables
the running server has.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from collector.mcp import store as mcp_store
from collector.read.views import create_views
from collector.store.lake import StoreSettings
from collector.store.schema import DERIVED_TABLES, create_derived_sql
from collector.store.writer import Store


@contextmanager
def service_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(
        StoreSettings(catalog=str(tmp_path / "cat.ducklake"), data_path=str(tmp_path / "d"))
    )
    store.open()
    store.call(lambda cur: [cur.execute(create_derived_sql(name)) for name in DERIVED_TABLES])
    store.call(mcp_store.create_tables)
    create_views(store)
    try:
        yield store
    finally:
        store.close()
