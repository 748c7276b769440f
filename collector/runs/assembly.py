"""Run assembly in a decode worker: span rows in as Arrow IPC, the derived tables out as IPC.

The run deriver (`derive.py`) reads spans back and offloads `assemble_ipc` to the decode pool;
this module imports no store, so a worker holds only what assembly needs (`docs/benchmarks.md`).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from collector.store.keys import run_key
from collector.store.schema import derived_arrow_schema
from processors.runs.assemble import RunsProcessor, assemble_facts
from processors.runs.rows import RunTool, SpanRun, facts_of
from processors.runs.tree import SpanFacts

TraceKey = tuple[str, str]  # (org, trace_id)


def assemble_ipc(
    assembler: RunsProcessor, spans: bytes, linked: bytes, now_ns: int
) -> dict[str, bytes]:
    """Assemble every trace of an Arrow IPC stream of span rows (the traces to derive; `linked`:
    spans of the traces they link to) and return each derived table as an Arrow IPC stream.
    Module-level, so a worker process runs it: the rows cross the process boundary as columns,
    and every Python object is made and dropped in the worker."""
    by_trace = _by_trace(facts_of(from_ipc(spans)))
    linked_by_trace = _by_trace(facts_of(from_ipc(linked)))
    runs: list[dict[str, Any]] = []
    span_runs: list[SpanRun] = []
    run_tools: list[RunTool] = []
    for key in sorted(by_trace):
        facts = by_trace[key]
        targets = {t for f in facts for t, _ in f.links}
        others = [
            f
            for t in sorted(targets)
            for f in (by_trace.get((key[0], t)) or linked_by_trace.get((key[0], t)) or [])
        ]
        result = assemble_facts(assembler.config, facts, now_ns, others)
        runs.extend(dict(vars(r)) for r in result.runs)
        span_runs.extend(result.span_runs)
        run_tools.extend(result.run_tools)
    for run in runs:
        run["run_key"] = run_key(run["org"], run["run_id"])
        run["parent_run_key"] = run_key(run["org"], run.get("parent_run_id"))
    return {
        "runs": to_ipc(pa.Table.from_pylist(runs, derived_arrow_schema("runs"))),
        "span_runs": to_ipc(_tuples_table("span_runs", SpanRun._fields, span_runs)),
        "run_tools": to_ipc(_tuples_table("run_tools", RunTool._fields, run_tools)),
    }


def _tuples_table(name: str, fields: tuple[str, ...], rows: list[Any]) -> pa.Table:
    """A derived table's rows (named tuples of `fields`) as Arrow, column by column."""
    schema = derived_arrow_schema(name)
    columns = list(zip(*rows, strict=True)) or [()] * len(fields)
    by_name = dict(zip(fields, columns, strict=True))
    return pa.table([pa.array(by_name[f.name], f.type) for f in schema], schema=schema)


def _by_trace(facts: list[SpanFacts]) -> dict[TraceKey, list[SpanFacts]]:
    out: dict[TraceKey, list[SpanFacts]] = {}
    for f in facts:
        out.setdefault((f.org, f.trace_id), []).append(f)
    return out


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()
