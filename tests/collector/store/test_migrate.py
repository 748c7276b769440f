"""`agentledger store migrate`: a single-node store copied into an empty PostgreSQL + S3 store,
verified by row counts; the watermarks start at the new store's snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.cli import main
from collector.store.lake import StoreSettings
from collector.store.migrate import MigrateRefused, migrate
from collector.store.watermarks import write_watermark
from collector.store.writer import Store
from tests.cluster import SharedStore

pytestmark = pytest.mark.slow  # a PostgreSQL and an S3 server


def _single_node(tmp_path: Path) -> StoreSettings:
    settings = StoreSettings(
        catalog=str(tmp_path / "data" / "catalog.ducklake"), data_path=str(tmp_path / "data/data/")
    )
    store = Store(settings)
    store.open()
    for i in range(3):
        store.call(
            lambda cur, i=i: cur.execute("INSERT INTO orgs VALUES (?, now(), NULL)", [f"o{i}"])
        )
    store.call(
        lambda cur: write_watermark(
            cur, "runs", int(cur.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0])
        )
    )
    store.close()
    return settings


def test_copy_verified_by_row_counts(tmp_path: Path, shared_store: SharedStore) -> None:
    source = _single_node(tmp_path)
    result = migrate(source, shared_store.settings())
    assert result.matches
    assert result.counts["orgs"] == (3, 3)
    assert result.counts["spans"] == (0, 0)
    target = Store(shared_store.settings())
    target.open()
    try:
        current = target.query("SELECT id FROM lake.current_snapshot()")[0][0]
        # The copy's snapshot; the one after it moved the watermarks and holds nothing followed.
        marks = target.query("SELECT name, snapshot_id FROM watermarks")
        assert marks == [("runs", current - 1)]
    finally:
        target.close()
    with pytest.raises(MigrateRefused, match="already has tables"):
        migrate(source, shared_store.settings())


def test_a_store_with_underived_spans_is_refused(tmp_path: Path, shared_store: SharedStore) -> None:
    source = _single_node(tmp_path)
    store = Store(source)
    store.open()
    store.call(lambda cur: cur.execute("INSERT INTO spans (trace_id, span_id) VALUES ('t', 's')"))
    store.close()
    with pytest.raises(MigrateRefused, match="has not read the newest spans"):
        migrate(source, shared_store.settings())


def test_the_command(
    tmp_path: Path, shared_store: SharedStore, capsys: pytest.CaptureFixture[str]
) -> None:
    _single_node(tmp_path)
    s3 = shared_store.s3.s3_config()
    config = tmp_path / "single.yaml"
    config.write_text(
        f'storage:\n  path: "{tmp_path / "data"}"\n'
        f'  s3: {{endpoint: "{s3.endpoint}", url_style: path, use_ssl: false, '
        f'key_id: "{s3.key_id}", secret: "{s3.secret}"}}\n'
    )
    argv = ["store", "migrate", "--config", str(config)]
    argv += ["--to-catalog", shared_store.catalog, "--to-data-path", shared_store.data_path]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "orgs: 3 -> 3" in out
    assert "every row count matches" in out
    assert main(argv) == 1  # not into a used store
    assert "already has tables" in capsys.readouterr().err
