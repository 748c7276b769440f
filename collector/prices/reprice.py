"""Re-prices stored LLM calls with the current price book (`agentledger prices recompute`).

Reads the priced columns of `llm` spans from the store (server stopped), runs them through the
configured cost processor again, and updates cost_usd / cost_source / price_book_version in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from collector.model import Batch, Processor, Signal

PRICED = [
    "org", "trace_id", "span_id", "span_type", "usage_is_aggregate", "model", "request_model",
    "provider", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "reasoning_tokens", "cost_usd", "cost_source", "price_book_version",
]  # fmt: skip


@dataclass(frozen=True)
class RepriceResult:
    examined: int
    changed: int


def reprice(
    con: duckdb.DuckDBPyConnection, cost: Processor, org: str | None = None, chunk: int = 50_000
) -> RepriceResult:
    """Recompute the cost of every LLM span that did not carry its own cost."""
    examined = changed = 0
    for org_name, rows in _chunks(con, org, chunk):
        n = rows.num_rows
        columns = {name: rows.column(name).to_pylist() for name in PRICED}
        before = list(zip(columns["cost_usd"], columns["cost_source"], strict=True))
        batch = cost.process(
            Batch(Signal.TRACES, org_name, columns, [{}] * n, [{}] * n, [[] for _ in range(n)])
        )
        after = list(zip(batch.columns["cost_usd"], batch.columns["cost_source"], strict=True))
        moved = [i for i in range(n) if before[i] != after[i]]
        examined += n
        if not moved:
            continue
        update = pa.table(
            {
                "org": [org_name] * len(moved),
                "trace_id": [columns["trace_id"][i] for i in moved],
                "span_id": [columns["span_id"][i] for i in moved],
                "cost_usd": pa.array([after[i][0] for i in moved], pa.float64()),
                "cost_source": [after[i][1] for i in moved],
                "price_book_version": [batch.columns["price_book_version"][i] for i in moved],
            }
        )
        con.register("_reprice", update)
        con.execute("BEGIN")
        con.execute(
            "UPDATE spans SET cost_usd = r.cost_usd, cost_source = r.cost_source, "
            "price_book_version = r.price_book_version FROM _reprice r "
            "WHERE spans.org = r.org AND spans.trace_id = r.trace_id AND spans.span_id = r.span_id"
        )
        con.execute("COMMIT")
        con.unregister("_reprice")
        changed += len(moved)
    return RepriceResult(examined, changed)


def _chunks(
    con: duckdb.DuckDBPyConnection, org: str | None, chunk: int
) -> Iterator[tuple[str, pa.Table]]:
    orgs = (
        [org] if org else [r[0] for r in con.execute("SELECT DISTINCT org FROM spans").fetchall()]
    )
    cols = ", ".join(PRICED)
    for name in orgs:
        table = con.execute(
            f"SELECT {cols} FROM spans WHERE org = ? AND span_type = 'llm' "
            "AND coalesce(cost_source, '') <> 'provided' ORDER BY trace_id, span_id",
            [name],
        ).to_arrow_table()
        for offset in range(0, table.num_rows, chunk):
            yield name, table.slice(offset, chunk)
