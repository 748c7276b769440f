"""Run assembly: one trace's committed spans → its runs (status, totals, child runs) and which run
each span belongs to. Pure; `collector/runs/derive.py` feeds it spans from the store and writes
back.

In short (details at each function): run spans are the agent spans; a trace without any has
one run, its root. Every span belongs to its nearest ancestor run. Spans whose parent has not
arrived form a *provisional* run named after that missing parent (usually the root, which ends
last), so its id is already the final one; once a root has arrived, they join the first run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from processors.runs.loops import detect_loop
from processors.runs.rows import (
    SPAN_FACT_FIELDS,
    RunRow,
    RunTool,
    SpanRun,
    TraceRuns,
    from_epoch_ns,
    pack_call_ids,
    run_tools,
    span_facts,
)
from processors.runs.tree import STATUS_ERROR as _STATUS_ERROR
from processors.runs.tree import STATUS_OK as _STATUS_OK
from processors.runs.tree import (
    RunTree,
    SpanFacts,
    first_value,
    group_traces,
    order,
    says_timeout,
    workflow_name,
)

_TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


@dataclass(frozen=True)
class RunsConfig:
    """`loop_threshold` repeats make a loop; a run whose root has not arrived `root_timeout_s`
    after its last span is a timeout; a trace lasts at most `max_trace_duration_s` (bounds the
    scan); derivation runs every `interval_ms`. `excerpt_chars` is normalise's excerpt limit.
    `enabled: false` makes a node that only ingests (another node, or a later start, derives).
    While derivation is more than `pace_lag_s` behind ingest, a request of new spans waits up to
    `pace_wait_s` for it (0: never); more than `max_lag_s`, new spans are refused (503 +
    Retry-After; 0: never). The deriver remembers up to `max_known_traces` traces of the last
    `max_trace_duration_s` (24 bytes each); older ones are read back from the store."""

    loop_threshold: int = 5
    root_timeout_s: int = 3600
    max_trace_duration_s: int = 86400
    interval_ms: int = 1000
    excerpt_chars: int = 2000
    enabled: bool = True
    max_lag_s: int = 60
    pace_lag_s: float = 5.0
    pace_wait_s: float = 1.0
    max_known_traces: int = 4_000_000

    def __post_init__(self) -> None:
        if self.loop_threshold < 2:
            raise ValueError(f"runs.loop_threshold: must be at least 2, got {self.loop_threshold}")
        for name in (
            "root_timeout_s",
            "max_trace_duration_s",
            "interval_ms",
            "excerpt_chars",
            "max_known_traces",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"runs.{name}: must be positive, got {getattr(self, name)}")
        for name in ("max_lag_s", "pace_lag_s", "pace_wait_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"runs.{name}: must be 0 or more, got {getattr(self, name)}")


class RunsProcessor:
    """The run assembler as `collector/runs/derive.py` sees it: stored span rows in, table rows out.

    The collector may not import processors (only the registry does), so the registry hands this
    object to the deriver, which selects `columns` from `spans` and writes the rows it returns.
    """

    columns: tuple[str, ...] = (
        *(f for f in SPAN_FACT_FIELDS if f != "received_ns"),
        "received_at",
    )

    def __init__(self, config: RunsConfig) -> None:
        self.config = config

    def assemble(
        self, spans: Sequence[Mapping[str, Any]], now_ns: int, linked: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[dict[str, Any]]]:
        result = assemble(
            [span_facts(s) for s in spans],
            now_ns,
            self.config,
            linked=[span_facts(s) for s in linked],
        )
        return {
            # Shallow copies: rows hold only scalars, and asdict's deep copy was the hot spot.
            "runs": [dict(vars(r)) for r in result.runs],
            "span_runs": [r._asdict() for r in result.span_runs],
            "run_tools": [r._asdict() for r in result.run_tools],
        }


def assemble_facts(
    config: RunsConfig, spans: Sequence[SpanFacts], now_ns: int, linked: Sequence[SpanFacts]
) -> TraceRuns:
    """`assemble` with the arguments in the order a batch loop has them."""
    return assemble(spans, now_ns, config, linked=linked)


def assemble(
    spans: Sequence[SpanFacts],
    now_ns: int,
    config: RunsConfig,
    *,
    linked: Sequence[SpanFacts] = (),
) -> TraceRuns:
    """The runs of ONE trace. `linked` are spans of other traces that this trace's run spans may
    link to (they resolve `parent_run_id` across traces); their own runs are not returned."""
    if not spans:
        return TraceRuns()
    org, trace_id = spans[0].org, spans[0].trace_id
    if any(s.org != org or s.trace_id != trace_id for s in spans):
        raise ValueError("assemble: spans of more than one (org, trace)")
    tree = RunTree(spans)
    others = group_traces(s for s in linked if s.org == org and s.trace_id != trace_id)
    return _Builder(tree, others, now_ns, config).build()


@dataclass(frozen=True)
class _Usage:
    tokens: tuple[int, int, int, int, int]
    cost_usd: float  # LLM calls and tool calls
    cost_unknown_calls: int
    llm_calls: int
    counted: bool  # some usage of this run or a run below it was counted
    tool_cost_usd: float = 0.0


class _Builder:
    """Computes the row of every run of one `RunTree`: children before parents (status and usage
    look at child runs), then parents before children (session and user are inherited)."""

    def __init__(
        self, tree: RunTree, others: dict[str, RunTree], now_ns: int, config: RunsConfig
    ) -> None:
        self.t = tree
        self.others = others
        self.now_ns = now_ns
        self.config = config
        self.children: dict[str, list[str]] = {k: [] for k in tree.run_keys}
        for key in tree.run_keys:
            up = tree.parent[key]
            if up is not None:
                self.children[up].append(key)
        self.status: dict[str, tuple[str, str | None]] = {}
        self.usage: dict[str, _Usage] = {}
        self._loops: dict[str, str | None] = {}
        self._leaves: dict[str, list[SpanFacts]] = {}
        self._llm_calls: dict[str, list[SpanFacts]] = {}

    def build(self) -> TraceRuns:
        t = self.t
        for key in self._post_order():
            self.usage[key] = self._usage(key)
            self.status[key] = self._status(key)
        inherited: dict[str, tuple[str | None, str | None]] = {}
        rows = []
        tools: list[RunTool] = []
        every = sorted(t.spans.values(), key=order)
        for key in reversed(self._post_order()):
            up = t.parent[key]
            members = self._by_start(key)
            run_span = t.spans.get(key) if key in t.arrived else None
            first = [run_span, *members] if run_span else members
            session = first_value(first, "session_id")
            user = first_value(first, "user_id")
            if up is not None:
                session, user = session or inherited[up][0], user or inherited[up][1]
            session, user = (
                session or first_value(every, "session_id"),
                user or first_value(every, "user_id"),
            )
            inherited[key] = (session, user)
            row = self._row(key, run_span, members, session, user)
            rows.append(row)
            tools.extend(run_tools(row, members))
        span_runs = tuple(
            SpanRun(
                s.org, s.trace_id, s.span_id, t.trace_id + run, s.span_type, s.start_time_unix_nano
            )
            for s in t.spans.values()
            if (run := t.owner[s.span_id]) is not None
        )
        tools.sort(key=lambda r: r.run_id)  # stable: by start within a run
        return TraceRuns(tuple(sorted(rows, key=lambda r: r.run_id)), span_runs, tuple(tools))

    def _post_order(self) -> list[str]:
        out: list[str] = []

        def visit(key: str) -> None:
            for child in sorted(self.children[key]):
                visit(child)
            out.append(key)

        for key in self.t.run_keys:
            if self.t.parent[key] is None:
                visit(key)
        return out

    def _by_start(self, key: str) -> list[SpanFacts]:
        return sorted(self.t.members[key], key=order)

    def _ancestors_in_run(self, s: SpanFacts, key: str) -> Iterable[SpanFacts]:
        """The spans above `s` that belong to the same run, nearest first."""
        seen = {s.span_id}
        cur = s
        while cur.parent_span_id and cur.span_id != key:
            parent = self.t.spans.get(cur.parent_span_id)
            if parent is None or parent.span_id in seen or self.t.owner[parent.span_id] != key:
                return
            seen.add(parent.span_id)
            yield parent
            cur = parent

    def _usage(self, key: str) -> _Usage:
        """SEMCONV rule (a): sum over LLM spans; an LLM span wrapping another LLM span (e.g. a
        LangChain model span around the OpenAI client span) is one call, and its usage counts
        only when nothing beneath reports any. Aggregates (usage repeated from children on an
        agent span) count only when no LLM span of the run, and no run below, reported usage."""
        members = self.t.members[key]
        llm = [s for s in members if s.span_type == "llm"]
        has_llm_below: set[str] = set()
        has_reporter_below: set[str] = set()
        for s in llm:
            reporter = s.reports_usage and not s.usage_is_aggregate
            for a in self._ancestors_in_run(s, key):
                if a.span_type == "llm":
                    has_llm_below.add(a.span_id)
                    if reporter:
                        has_reporter_below.add(a.span_id)
        calls = [s for s in llm if s.span_id not in has_llm_below]
        used = [
            s
            for s in llm
            if s.reports_usage and not s.usage_is_aggregate and s.span_id not in has_reporter_below
        ]
        below = any(self.usage[c].counted for c in self.children[key])
        if not used and not below:
            aggregates = [s for s in members if s.usage_is_aggregate and s.reports_usage]
            ids = {s.span_id for s in aggregates}
            used = [
                s
                for s in aggregates
                if not any(a.span_id in ids for a in self._ancestors_in_run(s, key))
            ]
        unknown = 0
        for call in calls:
            chain = [call, *self._ancestors_in_run(call, key)]
            if not any(s.cost_usd is not None for s in chain if s.span_type == "llm"):
                unknown += 1
        sums = [sum(getattr(s, f) or 0 for s in used) for f in _TOKEN_FIELDS]
        # Priced tool calls (a paid search, a scraper) count beside the LLM calls; a tool span
        # wrapping another is one call, as for `tool_use_count`.
        tools = float(sum(s.cost_usd for s in self._leaf_tools(key) if s.cost_usd is not None))
        return _Usage(
            tokens=(sums[0], sums[1], sums[2], sums[3], sums[4]),
            tool_cost_usd=tools,
            cost_usd=float(sum(s.cost_usd for s in used if s.cost_usd is not None)) + tools,
            cost_unknown_calls=unknown,
            llm_calls=len(calls),
            counted=bool(used) or below,
        )

    def _leaf_tools(self, key: str) -> list[SpanFacts]:
        found = self._leaves.get(key)
        if found is None:
            found = self._leaves[key] = self._find_leaf_tools(key)
        return found

    def _find_leaf_tools(self, key: str) -> list[SpanFacts]:
        tools = [s for s in self.t.members[key] if s.span_type == "tool"]
        wrapping = {
            a.span_id
            for s in tools
            for a in self._ancestors_in_run(s, key)
            if a.span_type == "tool"
        }
        return sorted((s for s in tools if s.span_id not in wrapping), key=order)

    def _calls(self, key: str) -> list[SpanFacts]:
        found = self._llm_calls.get(key)
        if found is None:
            found = self._llm_calls[key] = self._find_calls(key)
        return found

    def _find_calls(self, key: str) -> list[SpanFacts]:
        llm = [s for s in self.t.members[key] if s.span_type == "llm"]
        wrapping = {
            a.span_id for s in llm for a in self._ancestors_in_run(s, key) if a.span_type == "llm"
        }
        return sorted((s for s in llm if s.span_id not in wrapping), key=order)

    def _status(self, key: str) -> tuple[str, str | None]:
        """(status, error type). Precedence: timeout, error, loop_detected, success."""
        t = self.t
        members = t.members[key]
        if key not in t.arrived:
            last = max(s.last_seen_ns for s in members)
            waited = self.now_ns - last >= self.config.root_timeout_s * 1_000_000_000
            return ("timeout", None) if waited else ("running", None)
        root = t.spans[key]
        if root.is_error or root.status_code == _STATUS_ERROR:
            return ("timeout" if says_timeout(root) else "error"), root.error_type
        if says_timeout(root):
            return "timeout", root.error_type
        if root.status_code != _STATUS_OK:
            # A child error the run did not survive: nothing of the run started after it ended.
            # An explicit OK on the root means the agent handled it, whatever failed inside.
            culprit = self._unhandled_error(key, root)
            if culprit is not None:
                return culprit
        if self._loop(key):
            return "loop_detected", None
        return "success", None

    def _unhandled_error(self, key: str, root: SpanFacts) -> tuple[str, str | None] | None:
        t = self.t
        others = [s for s in t.members[key] if s is not root]
        failures: list[tuple[SpanFacts, str, str | None]] = [
            (s, "timeout" if says_timeout(s) else "error", s.error_type)
            for s in others
            if s.is_error
        ]
        for child in self.children[key]:
            status, error_type = self.status[child]
            others.append(t.spans[child])
            if status in ("error", "timeout"):
                failures.append((t.spans[child], status, error_type))
        if not failures:
            return None
        latest_start = max(s.start_time_unix_nano for s in others)
        unhandled = [f for f in failures if f[0].end_time_unix_nano >= latest_start]
        if not unhandled:
            return None
        last = max(unhandled, key=lambda f: (f[0].end_time_unix_nano, f[0].span_id))
        return last[1], last[2]

    def _loop(self, key: str) -> str | None:
        if key not in self._loops:
            self._loops[key] = self._detect_loop(key)
        return self._loops[key]

    def _detect_loop(self, key: str) -> str | None:
        return detect_loop(
            [(s.tool_name, s.tool_args) for s in self._leaf_tools(key)],
            [s.input_text for s in self._calls(key)],
            threshold=self.config.loop_threshold,
            excerpt_chars=self.config.excerpt_chars,
        )

    def _parent_run_id(self, key: str, run_span: SpanFacts | None) -> tuple[str | None, str | None]:
        """(parent run id, link trace id): the nearest ancestor run, else the run that the run
        span's first link points into, if that run started earlier (so links never cycle)."""
        t = self.t
        up = t.parent[key]
        if up is not None:
            return t.trace_id + up, None
        if run_span is None or not run_span.links:
            return None, None
        link_trace, link_span = run_span.links[0]
        target = t if link_trace == t.trace_id else self.others.get(link_trace)
        linked = None if link_trace == t.trace_id else link_trace
        if target is None:
            return None, linked
        target_key = target.run_of(link_span)
        if target_key is None or (target is t and target_key == key):
            return None, linked
        mine = (t.run_start(key), t.trace_id + key)
        theirs = (target.run_start(target_key), target.trace_id + target_key)
        return (theirs[1] if theirs < mine else None), linked

    def _row(
        self,
        key: str,
        run_span: SpanFacts | None,
        members: list[SpanFacts],
        session: str | None,
        user: str | None,
    ) -> RunRow:
        t = self.t
        status, error_type = self.status[key]
        usage = self.usage[key]
        calls = self._calls(key)
        started = t.run_start(key)
        ended: int | None = None
        if run_span is not None:
            ended = max(run_span.end_time_unix_nano, started)
        elif status == "timeout":
            ended = max(s.end_time_unix_nano for s in members)
        parent_run_id, link_trace_id = self._parent_run_id(key, run_span)
        head = run_span or members[0]
        input_excerpt = (run_span.input_text if run_span else None) or first_value(
            calls, "input_text"
        )
        output_excerpt = (run_span.output_text if run_span else None) or first_value(
            sorted(calls, key=lambda s: (s.end_time_unix_nano, s.span_id), reverse=True),
            "output_text",
        )
        return RunRow(
            org=head.org,
            run_id=t.trace_id + key,
            trace_id=t.trace_id,
            span_id=key,
            parent_run_id=parent_run_id,
            workflow_name=workflow_name(run_span, members),
            run_id_external=first_value(
                [run_span, *members] if run_span else members, "run_id_external"
            ),
            status=status,
            started_at=from_epoch_ns(started),
            ended_at=from_epoch_ns(ended) if ended is not None else None,
            duration_ms=(ended - started) // 1_000_000 if ended is not None else None,
            cost_usd=usage.cost_usd,
            cost_unknown_calls=usage.cost_unknown_calls,
            tool_cost_usd=usage.tool_cost_usd,
            input_tokens=usage.tokens[0],
            output_tokens=usage.tokens[1],
            cache_read_tokens=usage.tokens[2],
            cache_write_tokens=usage.tokens[3],
            reasoning_tokens=usage.tokens[4],
            total_tokens=usage.tokens[0] + usage.tokens[1],
            llm_call_count=usage.llm_calls,
            tool_use_count=len(self._leaf_tools(key)),
            error_count=sum(1 for s in members if s.is_error),
            session_id=session,
            user_id=user,
            input_excerpt=input_excerpt,
            output_excerpt=output_excerpt,
            error_type=error_type,
            service_name=head.service_name,
            loop_detail=self._loop(key),
            link_trace_id=link_trace_id,
            last_span_at=from_epoch_ns(max(s.last_seen_ns for s in members)),
            updated_at=from_epoch_ns(self.now_ns),
            call_span_ids=pack_call_ids(members),
        )
