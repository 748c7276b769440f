"""Rows of the native JSON APIs share the OTLP group commit, into their own tables."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
import pytest

from collector.model import Rows, Signal
from collector.store.lake import StoreSettings
from collector.store.writer import Store
from tests.collector.prices.test_reprice import _llm
from tests.otlp_factory import export_request


def test_target_rows_commit_with_spans_in_one_group(tmp_path: Path) -> None:
    store = Store(StoreSettings(str(tmp_path / "c.ducklake"), str(tmp_path / "data")))
    store.open()
    try:
        store.call(lambda cur: cur.execute("CREATE TABLE events (org VARCHAR, n BIGINT)"))
        from collector.pipeline import process_payload

        spans, _ = process_payload(
            Signal.TRACES,
            "acme",
            export_request([_llm(1, "gpt-4o")]).SerializeToString(),
            "protobuf",
            {},
        )

        async def both() -> list[int]:
            results = await asyncio.gather(
                store.append(
                    Rows(
                        None,
                        "acme",
                        pa.table({"org": ["acme"] * 3, "n": [1, 2, 3]}),
                        target="events",
                    )
                ),
                store.append(Rows(Signal.TRACES, "acme", spans)),
            )
            return [r.accepted for r in results]

        assert asyncio.run(both()) == [3, 1]
        assert store.query("SELECT sum(n) FROM events") == [(6,)]
        assert store.query("SELECT count(*) FROM spans") == [(1,)]
        with pytest.raises(ValueError, match="signal or a target"):
            _ = Rows(None, "acme", spans).table_name
    finally:
        store.close()


def test_a_bad_request_fails_alone_not_the_group_it_shared(tmp_path: Path) -> None:
    from collector.model import StoreUnavailable

    store = Store(StoreSettings(str(tmp_path / "c.ducklake"), str(tmp_path / "data")))
    store.open()
    try:
        store.call(lambda cur: cur.execute("CREATE TABLE events (org VARCHAR, n BIGINT)"))
        good = pa.table({"org": ["acme"], "n": [1]})
        bad = pa.table({"org": ["acme"], "n": ["not a number"]})  # does not fit the table

        async def together() -> list[object]:
            return await asyncio.gather(
                store.append(Rows(None, "acme", good, target="events")),
                store.append(Rows(None, "acme", bad, target="events")),
                store.append(Rows(None, "acme", good, target="events")),
                return_exceptions=True,
            )

        results = asyncio.run(together())
        assert [type(r).__name__ for r in results] == ["Accepted", "StoreUnavailable", "Accepted"]
        assert isinstance(results[1], StoreUnavailable)
        assert store.query("SELECT count(*) FROM events") == [(2,)]
        assert store.stats.commit_failures == 2  # the shared commit, then the bad one alone
    finally:
        store.close()
