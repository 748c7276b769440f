"""Re-prices stored LLM and tool calls with the current prices (`agentledger prices recompute`).

Reads the priced columns of `llm` and `tool` spans from the store (server stopped), runs them
through the configured cost processor again (each call at its own start time, so only a change
of the prices in force then moves it), updates the cost and price columns in place and, in the
same transaction, the totals of the runs those calls belong to (`collector/runs/recost.py`);
says per model what changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from collector.model import Batch, Processor, Signal
from collector.progress import Progress
from collector.runs.recost import RunTotals
from collector.store.lake import ARROW_BATCH_ROWS

PRICED = [
    "org", "trace_id", "span_id", "span_type", "usage_is_aggregate", "model", "request_model",
    "provider", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "reasoning_tokens", "cost_usd", "cost_source", "price_book_version", "start_time_unix_nano",
    "tool_name", "price_source", "price_effective_from", "price_mode",
]  # fmt: skip
_WRITTEN = (
    "cost_usd", "cost_source", "price_book_version", "price_source", "price_effective_from",
    "price_mode",
)  # fmt: skip


@dataclass
class Change:
    """What re-pricing did to one model's (or tool's) calls."""

    calls: int = 0
    before_usd: float = 0.0
    after_usd: float = 0.0
    unknown_before: int = 0
    unknown_after: int = 0


@dataclass(frozen=True)
class RepriceResult:
    """Calls `examined` and `changed`, `runs` whose stored totals changed, and per model (or
    tool) what its changed calls cost before and after."""

    examined: int
    changed: int
    by_model: dict[str, Change] = field(default_factory=dict)
    runs: int = 0

    def report(self) -> list[str]:
        """One line per model whose calls changed: how many, and total USD before → after."""
        lines = []
        for name, c in sorted(self.by_model.items()):
            unknown = ""
            if c.unknown_before or c.unknown_after:
                unknown = f" (unpriced {c.unknown_before} -> {c.unknown_after})"
            lines.append(
                f"  {name}: {c.calls} calls, ${c.before_usd:.6f} -> ${c.after_usd:.6f}{unknown}"
            )
        return lines


def reprice(
    con: duckdb.DuckDBPyConnection,
    cost: Processor,
    totals: RunTotals,
    org: str | None = None,
    *,
    chunk: int = 50_000,
    progress: Progress | None = None,
) -> RepriceResult:
    """Recompute the cost of every LLM and tool span that did not carry its own cost, and the
    totals of their runs with `totals`, a chunk of calls per transaction (so stored run totals
    always add up to their stored calls); `progress` is told of each chunk examined."""
    examined = changed = runs = 0
    by_model: dict[str, Change] = {}
    for org_name, rows in _chunks(con, org, chunk):
        n = rows.num_rows
        columns = {name: rows.column(name).to_pylist() for name in PRICED}
        attributes = [_attrs(a) for a in rows.column("attributes").to_pylist()]
        before = list(zip(columns["cost_usd"], columns["cost_source"], strict=True))
        batch = cost.process(
            Batch(Signal.TRACES, org_name, dict(columns), attributes, [{}] * n,
                  [[] for _ in range(n)])
        )  # fmt: skip
        after = list(zip(batch.columns["cost_usd"], batch.columns["cost_source"], strict=True))
        moved = [i for i in range(n) if before[i] != after[i]]
        examined += n
        if progress is not None:
            progress.advance(n)
        if not moved:
            continue
        for i in moved:
            name = columns["model"][i] or columns["tool_name"][i] or "(unnamed)"
            c = by_model.setdefault(name, Change())
            c.calls += 1
            c.before_usd += before[i][0] or 0.0
            c.after_usd += after[i][0] or 0.0
            c.unknown_before += before[i][0] is None
            c.unknown_after += after[i][0] is None
        update = pa.table(
            {
                "org": [org_name] * len(moved),
                "trace_id": [columns["trace_id"][i] for i in moved],
                "span_id": [columns["span_id"][i] for i in moved],
                **{
                    name: pa.array(
                        [batch.columns[name][i] for i in moved],
                        pa.float64() if name == "cost_usd" else pa.string(),
                    )
                    for name in _WRITTEN
                },
            }
        )
        traces: dict[str, tuple[int, int]] = {}
        for i in moved:
            start = columns["start_time_unix_nano"][i] or 0
            lo, hi = traces.get(columns["trace_id"][i], (start, start))
            traces[columns["trace_id"][i]] = (min(lo, start), max(hi, start))
        con.register("_reprice", update)
        con.execute("BEGIN")
        try:
            sets = ", ".join(f"{name} = r.{name}" for name in _WRITTEN)
            con.execute(
                f"UPDATE spans SET {sets} FROM _reprice r WHERE spans.org = r.org "
                "AND spans.trace_id = r.trace_id AND spans.span_id = r.span_id"
            )
            runs += totals.update(con, org_name, traces)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.unregister("_reprice")
        changed += len(moved)
    return RepriceResult(examined, changed, by_model, runs)


def _attrs(raw: object) -> dict[str, object]:
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _chunks(
    con: duckdb.DuckDBPyConnection, org: str | None, chunk: int
) -> Iterator[tuple[str, pa.Table]]:
    orgs = (
        [org] if org else [r[0] for r in con.execute("SELECT DISTINCT org FROM spans").fetchall()]
    )
    cols = ", ".join([*PRICED, "attributes"])
    for name in orgs:
        table = con.execute(
            f"SELECT {cols} FROM spans WHERE org = ? AND span_type IN ('llm', 'tool') "
            "AND coalesce(cost_source, '') <> 'provided' ORDER BY trace_id, span_id",
            [name],
        ).to_arrow_table(ARROW_BATCH_ROWS)
        for offset in range(0, table.num_rows, chunk):
            yield name, table.slice(offset, chunk)
