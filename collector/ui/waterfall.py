"""A run's waterfall: its trace's spans as rows in tree order (agent → LLM call → tool call, as the
spans nest), each placed on one time axis as an offset and a width in percent.

Takes the spans of `collector/read/trace.py` and the run's root span; `templates/run.html` draws
the rows (bars as SVG, each row a `<details>` that opens on the step's model, tokens, cost,
excerpts, tool arguments and result, and error).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from collector.read.trace import TraceSpan

MAX_STEPS = 500
MAX_DEPTH = 12  # deeper steps are drawn at this indent (their depth is still shown)
MIN_WIDTH_PCT = 0.4  # an instant step is still a visible mark


@dataclass(frozen=True)
class WaterfallRow:
    span: TraceSpan
    depth: int
    left_pct: float
    width_pct: float
    duration_ms: float | None
    offset_ms: float  # from the waterfall's start
    label: str
    child_run_id: str | None  # the child run this agent span starts, linked from the row

    @property
    def kind(self) -> str:
        return self.span.span_type or "other"

    @property
    def indent(self) -> int:
        return min(self.depth, MAX_DEPTH)


@dataclass(frozen=True)
class Tick:
    left_pct: float
    label: str


@dataclass(frozen=True)
class Waterfall:
    steps: list[WaterfallRow]
    ticks: list[Tick]
    total_ms: float
    hidden: int  # spans not drawn: past MAX_STEPS


def label(span: TraceSpan) -> str:
    kind = span.span_type
    if kind == "llm":
        return span.model or span.name or "LLM call"
    if kind == "tool":
        return span.tool_name or span.name or "tool call"
    if kind == "agent":
        return span.agent_name or span.name or "agent"
    return span.name or span.span_id


def layout(
    spans: list[TraceSpan],
    root_span_id: str | None,
    child_runs: Mapping[str, str] | None = None,
    max_steps: int = MAX_STEPS,
) -> Waterfall:
    """The steps under `root_span_id` (the run's own span), depth first in start order; when
    the trace window lacks that span, every span whose parent is missing starts a tree.
    `child_runs` maps a child run's root span id to its run id."""
    by_id = {s.span_id: s for s in spans}
    children: dict[str | None, list[TraceSpan]] = {}
    for s in spans:
        parent = s.parent_span_id if s.parent_span_id in by_id else None
        if s.span_id == root_span_id:
            parent = None
        children.setdefault(parent, []).append(s)
    for group in children.values():
        group.sort(key=lambda s: (s.start_ns, s.span_id))
    if root_span_id is not None and root_span_id in by_id:
        roots = [by_id[root_span_id]]
    else:
        roots = children.get(None, [])

    ordered: list[tuple[TraceSpan, int]] = []
    seen: set[str] = set()
    stack = [(r, 0) for r in reversed(roots)]
    total = 0
    while stack:
        span, depth = stack.pop()
        if span.span_id in seen:  # a corrupt parent cycle is drawn once
            continue
        seen.add(span.span_id)
        total += 1
        if len(ordered) < max_steps:
            ordered.append((span, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(span.span_id, [])))
    if not ordered:
        return Waterfall([], [], 0.0, 0)

    t0 = min(s.start_ns for s, _ in ordered)
    t1 = max(max(s.start_ns, s.end_ns or s.start_ns) for s, _ in ordered)
    width_ns = max(t1 - t0, 1)
    runs = child_runs or {}
    steps = []
    for span, depth in ordered:
        end = span.end_ns if span.end_ns is not None else span.start_ns
        left = (span.start_ns - t0) / width_ns * 100
        width = max((max(end, span.start_ns) - span.start_ns) / width_ns * 100, MIN_WIDTH_PCT)
        left = min(left, 100 - MIN_WIDTH_PCT)
        steps.append(
            WaterfallRow(
                span=span,
                depth=depth,
                left_pct=round(left, 3),
                width_pct=round(min(width, 100 - left), 3),
                duration_ms=None if span.end_ns is None else (span.end_ns - span.start_ns) / 1e6,
                offset_ms=(span.start_ns - t0) / 1e6,
                label=label(span),
                child_run_id=runs.get(span.span_id) if depth > 0 else None,
            )
        )
    total_ms = (t1 - t0) / 1e6
    ticks = [Tick(p, _ms(total_ms * p / 100)) for p in (0, 25, 50, 75, 100)]
    return Waterfall(steps, ticks, total_ms, total - len(ordered))


def _ms(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"
