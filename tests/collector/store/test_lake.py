"""The lake on a shared store (PostgreSQL catalog, S3 data): two nodes see each other's commits,
an external DuckDB attaches it READ_ONLY and sees every commit, and errors hide secrets."""

from __future__ import annotations

import duckdb
import pytest

from collector.store.lake import (
    HTTPFS_EXTENSION,
    POSTGRES_EXTENSION,
    CatalogUnreachable,
    StoreSettings,
    connect,
    extension_path,
    probe,
    s3_secret_sql,
)
from collector.store.writer import Store
from tests.cluster import SharedStore

pytestmark = pytest.mark.slow  # a PostgreSQL and an S3 server


def test_two_nodes_read_each_others_commits(shared_store: SharedStore) -> None:
    a, b = Store(shared_store.settings()), Store(shared_store.settings())
    a.open()
    b.open()
    try:
        a.call(lambda cur: cur.execute("INSERT INTO orgs VALUES ('from-a', now(), NULL)"))
        b.call(lambda cur: cur.execute("INSERT INTO orgs VALUES ('from-b', now(), NULL)"))
        for node in (a, b):
            assert node.query("SELECT name FROM orgs ORDER BY 1") == [("from-a",), ("from-b",)]
        # Past DuckLake's inlining limit rows go to a Parquet file in the bucket: the size of a
        # shared store is measured from the catalog, not by walking a folder.
        a.call(
            lambda cur: cur.execute(
                "INSERT INTO orgs SELECT 'x' || range, now(), NULL FROM range(100)"
            )
        )
        assert a.catalog_bytes() > 0
        assert a.size_bytes() == a.catalog_bytes()
    finally:
        a.close()
        b.close()


def test_an_external_reader_attaches_read_only_and_sees_new_commits(
    shared_store: SharedStore,
) -> None:
    store = Store(shared_store.settings())
    store.open()
    reader = duckdb.connect(config={"autoinstall_known_extensions": False})
    try:
        # What the README shows a user (there the extensions come from INSTALL).
        for ext in (
            ("duckdb_extension_ducklake", "ducklake"),
            POSTGRES_EXTENSION,
            HTTPFS_EXTENSION,
        ):
            reader.execute(f"LOAD '{extension_path(*ext)}'")
        reader.execute(s3_secret_sql(shared_store.s3.s3_config()))
        reader.execute(
            f"ATTACH 'ducklake:{shared_store.catalog}' AS al "
            f"(DATA_PATH '{shared_store.data_path}', READ_ONLY)"
        )
        store.call(lambda cur: cur.execute("INSERT INTO orgs VALUES ('one', now(), NULL)"))
        assert reader.execute("SELECT count(*) FROM al.orgs").fetchone() == (1,)
        store.call(lambda cur: cur.execute("INSERT INTO orgs VALUES ('two', now(), NULL)"))
        assert reader.execute("SELECT count(*) FROM al.orgs").fetchone() == (2,)  # live
        with pytest.raises(duckdb.Error):
            reader.execute("INSERT INTO al.orgs VALUES ('no', now(), NULL)")
    finally:
        reader.close()
        store.close()


def test_an_unreachable_catalog_hides_its_password(shared_store: SharedStore) -> None:
    wrong = StoreSettings(
        catalog="postgres:host=127.0.0.1 port=1 dbname=x user=u password=hunter2secret",
        data_path=shared_store.data_path,
        s3=shared_store.s3.s3_config(),
    )
    with pytest.raises(CatalogUnreachable) as e:
        connect(wrong)
    assert "hunter2secret" not in str(e.value)
    problems = probe(wrong)
    assert len(problems) == 1 and "PostgreSQL catalog" in problems[0]
    assert "hunter2secret" not in problems[0]
    assert probe(shared_store.settings()) == []
