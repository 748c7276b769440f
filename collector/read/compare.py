"""Named queries for comparing two runs: both runs' summaries and steps, aligned step by step,
with the difference of their tool sequences. Reads `runs`, `span_runs` and `spans`; the route's
per-org gate, `compare_enabled`, is a key of the org's settings (`SETTINGS`).
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from collector.api import schema as sc
from collector.auth.settings import SettingsGroup
from collector.read.runs import RunSummary
from collector.store.query import MAX_DETAIL_SPANS, fetch
from collector.store.writer import Store

# The same columns, in the same order, as `query_runs.RunSummary`, plus the run's trace.
_RUNS_SQL = """SELECT run_id, workflow_name, run_id_external, status, cost_usd, total_tokens,
    duration_ms, llm_call_count, tool_use_count, epoch_us(started_at), epoch_us(ended_at),
    trace_id, input_tokens, output_tokens
    FROM runs WHERE org = $org AND run_id IN ($run_a, $run_b)
    LIMIT 2"""

# The trace_id bound on `spans` (not only on `span_runs`) lets DuckLake prune data files.
_STEPS_SQL = """SELECT sr.span_type, s.span_id,
    CASE sr.span_type WHEN 'tool' THEN coalesce(s.tool_name, s.name)
        ELSE coalesce(s.model, s.name) END AS step_name,
    s.model, s.input_tokens, s.output_tokens, s.cost_usd,
    coalesce(s.is_error, false) OR coalesce(s.status_code = 2, false) AS failed,
    s.start_time_unix_nano, s.end_time_unix_nano
    FROM span_runs sr
    JOIN spans s ON s.org = sr.org AND s.trace_id = sr.trace_id AND s.span_id = sr.span_id
    WHERE sr.org = $org AND sr.trace_id = $trace_id AND sr.run_id = $run_id
      AND sr.span_type IN ('llm', 'tool') AND s.org = $org AND s.trace_id = $trace_id
    ORDER BY s.start_time_unix_nano, s.span_id
    LIMIT $limit"""


@dataclass(frozen=True)
class Step:
    """One LLM call or tool event of a run; `offset_ms` is from the run's start."""

    kind: str  # "llm" | "tool"
    span_id: str
    name: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    failed: bool
    offset_ms: float
    duration_ms: float | None


@dataclass(frozen=True)
class RunSide:
    summary: RunSummary
    input_tokens: int
    output_tokens: int
    steps: list[Step]

    def tools(self) -> list[str]:
        return [s.name or "" for s in self.steps if s.kind == "tool"]


@dataclass(frozen=True)
class StepPair:
    """A step of run A and the step of run B it lines up with; one side is None when the other
    run has no counterpart."""

    kind: str
    name: str | None
    a: Step | None
    b: Step | None


@dataclass(frozen=True)
class Edit:
    """One opcode of the edit script turning A's tool sequence into B's (difflib's opcodes:
    equal, replace, delete, insert), with the half-open index ranges it covers."""

    op: str
    a_start: int
    a_end: int
    b_start: int
    b_end: int


@dataclass(frozen=True)
class ToolDiff:
    sequence_a: list[str]
    sequence_b: list[str]
    edits: list[Edit]
    added: list[str]  # calls in B beyond A's count of that tool, one entry a call
    removed: list[str]  # calls in A beyond B's count
    reordered: list[str]  # tools both runs call that the script could not keep in place
    distance: int  # inserted + deleted + replaced calls (replace counts the longer side)


@dataclass(frozen=True)
class Comparison:
    a: RunSide
    b: RunSide
    steps: list[StepPair]
    tools: ToolDiff


def _resolve(document: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    value = document.get("compare_enabled", True)
    problems = (
        []
        if isinstance(value, bool)
        else [{"field": "compare_enabled", "message": "must be true or false"}]
    )
    return {"compare_enabled": compare_enabled(document)}, problems


SETTINGS = SettingsGroup(
    "compare",
    {"compare_enabled": sc.boolean(description="GET /api/runs/compare (default true)")},
    _resolve,
)
"""The per-org setting of run comparison (`collector/auth/settings.py`)."""


def compare_enabled(document: Mapping[str, Any]) -> bool:
    """The org setting `compare_enabled` of an org's settings document; on unless it is
    `false`, so an org without settings, or with a value written by hand, keeps the route."""
    return document.get("compare_enabled") is not False


def load_runs(store: Store, org: str, run_a: str, run_b: str) -> dict[str, tuple[Any, ...]]:
    """`org`'s rows of the two runs by run_id; a missing or foreign run is simply absent."""
    rows = fetch(store, _RUNS_SQL, {"org": org, "run_a": run_a, "run_b": run_b})
    return {str(r[0]): r for r in rows}


def compare_runs(
    store: Store, org: str, row_a: tuple[Any, ...], row_b: tuple[Any, ...]
) -> Comparison:
    """Both runs (rows of `load_runs`) with their steps aligned and their tool sequences
    diffed. LLM calls line up by order (the i-th call with the i-th, so a model change shows
    on one row); tool events by name and occurrence (the k-th `search` with the k-th)."""
    a, b = _side(store, org, row_a), _side(store, org, row_b)
    return Comparison(a, b, align(a.steps, b.steps), diff_tools(a.tools(), b.tools()))


def _side(store: Store, org: str, row: tuple[Any, ...]) -> RunSide:
    summary = RunSummary(*row[:11])
    params = {"org": org, "run_id": row[0], "trace_id": row[11], "limit": 2 * MAX_DETAIL_SPANS}
    start_ns = summary.started_at_us * 1000
    steps: list[Step] = []
    per_kind: Counter[str] = Counter()
    for r in fetch(store, _STEPS_SQL, params):
        kind = str(r[0])
        per_kind[kind] += 1
        if per_kind[kind] > MAX_DETAIL_SPANS:
            continue
        s_start, s_end = int(r[8]), r[9]
        steps.append(
            Step(
                kind=kind,
                span_id=r[1],
                name=r[2],
                model=r[3],
                input_tokens=int(r[4] or 0),
                output_tokens=int(r[5] or 0),
                cost_usd=r[6],
                failed=bool(r[7]),
                offset_ms=round((s_start - start_ns) / 1e6, 3),
                duration_ms=None if s_end is None else round((int(s_end) - s_start) / 1e6, 3),
            )
        )
    return RunSide(summary, int(row[12] or 0), int(row[13] or 0), steps)


def align(steps_a: list[Step], steps_b: list[Step]) -> list[StepPair]:
    """Pairs of corresponding steps, ordered by where they happen in their runs (A's offset,
    else B's), so the list reads as one timeline of the two runs side by side."""

    def key(s: Step, seen: Counter[tuple[str, str | None]]) -> tuple[str, str | None, int]:
        # LLM calls match by their ordinal alone; tool events by tool name and ordinal.
        group = (s.kind, s.name if s.kind == "tool" else None)
        seen[group] += 1
        return (*group, seen[group])

    seen_a: Counter[tuple[str, str | None]] = Counter()
    seen_b: Counter[tuple[str, str | None]] = Counter()
    by_key_b = {key(s, seen_b): s for s in steps_b}
    pairs: list[StepPair] = []
    matched: set[str] = set()
    for s in steps_a:
        other = by_key_b.get(key(s, seen_a))
        if other is not None:
            matched.add(other.span_id)
        pairs.append(StepPair(s.kind, s.name, s, other))
    pairs += [StepPair(s.kind, s.name, None, s) for s in steps_b if s.span_id not in matched]

    def when(p: StepPair) -> tuple[float, int]:
        side = p.a or p.b
        assert side is not None
        return (side.offset_ms, 0 if p.a is not None else 1)

    return sorted(pairs, key=when)


def diff_tools(seq_a: list[str], seq_b: list[str]) -> ToolDiff:
    """The edit script from A's tool sequence to B's, and what it means per tool."""
    # autojunk off: with it, a tool called in over 1% of a long run's calls would be ignored.
    matcher = difflib.SequenceMatcher(a=seq_a, b=seq_b, autojunk=False)
    edits = [Edit(op, i1, i2, j1, j2) for op, i1, i2, j1, j2 in matcher.get_opcodes()]
    count_a, count_b = Counter(seq_a), Counter(seq_b)
    kept: Counter[str] = Counter()
    for e in edits:
        if e.op == "equal":
            kept.update(seq_a[e.a_start : e.a_end])
    common = count_a & count_b
    return ToolDiff(
        sequence_a=seq_a,
        sequence_b=seq_b,
        edits=edits,
        added=sorted((count_b - count_a).elements()),
        removed=sorted((count_a - count_b).elements()),
        reordered=sorted(t for t in common if kept[t] < common[t]),
        distance=sum(
            max(e.a_end - e.a_start, e.b_end - e.b_start) for e in edits if e.op != "equal"
        ),
    )
