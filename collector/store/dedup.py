"""Recently stored span identities, so an OTLP retry is recognised without scanning the store.

The store writer asks `SpanDedup` which spans of a group are new; it checks 64-bit hashes
(the `span_key` column the decoder fills) in memory and confirms the few matches in the store.
"""

from __future__ import annotations

import time

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from collector.store.keys import span_key
from collector.store.tiers import U64, Tiers


class RecentSpanHashes:
    """Span hashes of the last `window_s` seconds, in `Tiers` of `epochs` epochs a window.

    An epoch is dropped whole once its newest hash is older than the window, so a hash is
    remembered for at most one window and one epoch. Memory is 8 bytes a hash, capped at
    `max_keys`; a match is only a candidate (the caller confirms it), so a collision or a
    longer memory never drops a span.
    """

    def __init__(self, window_s: float, max_keys: int = 50_000_000, epochs: int = 8):
        self._window_s = window_s
        self._max_keys = max_keys
        self._tiers = Tiers(window_s / epochs)

    def __len__(self) -> int:
        return self._tiers.size

    @property
    def generations(self) -> int:
        return len(self._tiers.generations)

    def may_contain(self, hashes: U64) -> npt.NDArray[np.bool_]:
        return self._tiers.find(hashes)[0]

    def add(self, hashes: U64, now: float) -> None:
        if self._window_s <= 0:  # storage.dedup_window_s: 0 remembers nothing
            return
        self._tiers.add(hashes, now)
        cutoff = now - self._window_s
        tiers = self._tiers
        while tiers.generations and (
            tiers.generations[0].newest < cutoff or tiers.size > self._max_keys
        ):
            tiers.pop_oldest()


class SpanDedup:
    """Which spans of a commit group are not stored yet, by (org, trace_id, span_id)."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._recent = RecentSpanHashes(window_s)
        self.last_dropped = 0
        """Spans the last `new_spans` call found already stored."""
        self.keyed: pa.Table | None = None
        """The last `new_spans` table with keys filled in, when it came without some."""

    def new_spans(
        self, cur: duckdb.DuckDBPyConnection, spans: pa.Table, table: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indices of spans not stored yet (first of equals within the group), and their hashes.

        A span's identity is (org, trace_id, span_id): one org's ids never hide another's spans.
        """
        self.last_dropped = 0
        self.keyed = None
        ids = spans.select(["org", "trace_id", "span_id"])
        column = spans.column("span_key")
        if column.null_count:
            # Rows built without the decoder (tests, tools): key them the same way here.
            column = pa.array(
                [
                    k if k is not None else span_key(o, bytes.fromhex(t), bytes.fromhex(sp))
                    for k, o, t, sp in zip(
                        column.to_pylist(),
                        *(ids.column(i).to_pylist() for i in range(3)),
                        strict=True,
                    )
                ],
                pa.int64(),
            )
            spans = spans.set_column(spans.schema.get_field_index("span_key"), "span_key", column)
            self.keyed = spans
        # int64 → uint64 is a view, not a copy.
        hashes = np.asarray(column.to_numpy()).view(np.uint64)
        _, first = np.unique(hashes, return_index=True)
        first.sort()
        keys: list[tuple[str, str, str]] | None = None
        if len(first) < len(hashes):
            # Equal hashes within the group: keep a later one only if its ids really differ.
            keys = _id_keys(ids)
            seen: set[tuple[str, str, str]] = set()
            keep_list = []
            for i, key in enumerate(keys):
                if key not in seen:
                    seen.add(key)
                    keep_list.append(i)
            first = np.asarray(keep_list, dtype=np.int64)
        maybe = self._recent.may_contain(hashes[first])
        if maybe.any():
            cand = first[maybe]
            stored = self._stored_keys(cur, hashes[cand], table)
            if stored:
                keys = keys or _id_keys(ids)
                drop = {int(i) for i in cand if keys[int(i)] in stored}
                self.last_dropped = len(drop)
                first = np.asarray([i for i in first if int(i) not in drop], dtype=np.int64)
        return first, hashes[first]

    def _stored_keys(
        self, cur: duckdb.DuckDBPyConnection, hashes: np.ndarray, table: str
    ) -> set[tuple[str, str, str]]:
        # Generations merge, so a hash can outlive the window by up to one window: look that far.
        window_start = time.time() - 2 * self._window_s
        rows = cur.execute(
            f"SELECT org, trace_id, span_id FROM {table} "
            "WHERE received_at >= to_timestamp(?) AND span_key IN "
            "(SELECT unnest(?::BIGINT[]))",
            [window_start, [int(h) for h in hashes.view(np.int64)]],
        ).fetchall()
        return {(r[0], r[1], r[2]) for r in rows}

    def load(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        """Rebuild the recent hashes from the spans received within the window (at start)."""
        window_start = time.time() - self._window_s
        hashes = con.execute(
            f"SELECT span_key AS h FROM {table} WHERE received_at >= to_timestamp(?)",
            [window_start],
        ).fetchnumpy()["h"]
        self._recent.add(np.asarray(hashes, dtype=np.int64).view(np.uint64), time.time())

    def remember(self, hashes: np.ndarray) -> None:
        """Hashes of spans just committed."""
        self._recent.add(hashes, time.time())


def _id_keys(ids: pa.Table) -> list[tuple[str, str, str]]:
    return list(zip(*(ids.column(i).to_pylist() for i in range(3)), strict=True))
