"""The run tree of one trace: which run each span belongs to (run spans, provisional runs for
spans whose parent has not arrived, the parent run of every run) and the facts read off a run's
spans (timeouts, workflow name). Pure; used by `assemble.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from processors.normalise.semconv import GENERIC_RUN_NAMES

_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
# OTLP span flags: bit 8 says whether bit 9 is known; bit 9 says the parent is remote, i.e. this
# span is the local root of a trace started by a service that may never send us its spans.
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200


class SpanFacts(NamedTuple):
    """The columns of one stored span that run assembly reads (names as in the `spans` table,
    except `links`, parsed to (trace_id, span_id) pairs, and `received_ns`). A tuple: made by
    the thousand a step, and a tuple is made about ten times faster than a frozen dataclass."""

    org: str
    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    name: str = ""
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    status_code: int = 0
    status_message: str | None = None
    flags: int = 0
    service_name: str | None = None
    links: tuple[tuple[str, str], ...] = ()
    received_ns: int | None = None
    span_type: str | None = None
    agent_name: str | None = None
    run_id_external: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage_is_aggregate: bool | None = None
    cost_usd: float | None = None
    cost_source: str | None = None
    tool_name: str | None = None
    tool_args: str | None = None
    is_error: bool | None = None
    error_type: str | None = None
    input_text: str | None = None
    output_text: str | None = None

    @property
    def reports_usage(self) -> bool:
        return self.cost_usd is not None or any(getattr(self, f) is not None for f in _TOKENS)

    @property
    def last_seen_ns(self) -> int:
        # Arrival time measures "no root came for a while" on the collector's clock.
        return self.received_ns if self.received_ns is not None else self.end_time_unix_nano


def _dedupe(spans: Iterable[SpanFacts]) -> dict[str, SpanFacts]:
    """One copy per span id; of stored duplicates (a retry after the dedup window) the latest
    arrival wins, ties broken on content, so the choice ignores input order."""
    best: dict[str, SpanFacts] = {}
    for s in spans:
        cur = best.get(s.span_id)
        if cur is None or (s.last_seen_ns, repr(s)) > (cur.last_seen_ns, repr(cur)):
            best[s.span_id] = s
    return dict(sorted(best.items()))


def group_traces(spans: Iterable[SpanFacts]) -> dict[str, RunTree]:
    by_trace: dict[str, list[SpanFacts]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    return {t: RunTree(ss) for t, ss in sorted(by_trace.items())}


def order(s: SpanFacts) -> tuple[int, str]:
    return (s.start_time_unix_nano, s.span_id)


class RunTree:
    """Which run every span of one trace belongs to. A run key is the run span's id, or for a
    provisional run the id of the missing parent its spans hang under."""

    def __init__(self, given: Iterable[SpanFacts]) -> None:
        self.spans = spans = _dedupe(given)
        self.trace_id = next(iter(spans.values())).trace_id
        agents = [i for i, s in spans.items() if s.span_type == "agent"]
        roots = [s for s in spans.values() if self._is_complete_root(s)]
        self.has_root = bool(roots)
        if agents:
            run_spans = set(agents)
        elif roots:
            run_spans = {min(roots, key=order).span_id}
        else:
            run_spans = set()
        self.arrived = run_spans
        self.owner: dict[str, str | None] = {}
        self.parent: dict[str, str | None] = {}  # run key → in-trace parent run key
        tops: dict[str, tuple[str, bool]] = {}
        for span_id in spans:
            tops[span_id] = self._walk(span_id, run_spans)
        # The trace's first run: where spans with a broken chain go once a root has arrived.
        top_level = [k for k in sorted(run_spans) if not self._walk_parent(k, run_spans)[1]]
        self.primary = min(top_level, key=lambda k: order(spans[k]), default=None)
        for span_id, (top, reached_run) in tops.items():
            if reached_run:
                self.owner[span_id] = top
            else:
                self.owner[span_id] = self._orphan_home(top, bool(agents))
        for key in sorted(run_spans):
            above, is_run = self._walk_parent(key, run_spans)
            self.parent[key] = above if is_run else self._orphan_home(above, True)
            if self.parent[key] == key:
                self.parent[key] = None
        for key in {k for k in self.owner.values() if k is not None} - run_spans:
            self.parent[key] = None  # a provisional run: its span, and so its parent, is missing
        for key, parent_key in self.parent.items():
            if parent_key is not None and parent_key not in self.parent:
                # A missing parent no span of ours hangs under alone (e.g. the remote caller of
                # an agent service) is no run: leaving it out spares a phantom timeout.
                self.parent[key] = None
        self.run_keys = sorted(self.parent)
        self.members: dict[str, list[SpanFacts]] = {k: [] for k in self.run_keys}
        for span_id, owner in self.owner.items():
            if owner is not None:
                self.members[owner].append(spans[span_id])

    @staticmethod
    def _is_complete_root(s: SpanFacts) -> bool:
        remote = (s.flags & (_HAS_IS_REMOTE | _IS_REMOTE)) == (_HAS_IS_REMOTE | _IS_REMOTE)
        return not s.parent_span_id or remote

    def _walk(self, span_id: str, run_spans: set[str]) -> tuple[str, bool]:
        """(nearest run span at or above `span_id`, True) or (top of its chain, False)."""
        if span_id in run_spans:
            return span_id, True
        return self._walk_parent(span_id, run_spans)

    def _walk_parent(self, span_id: str, run_spans: set[str]) -> tuple[str, bool]:
        """Like `_walk` but starting above `span_id`. A chain top is a present span that is a
        complete root, or a missing parent id (returned as the key of a provisional run)."""
        seen = {span_id}
        cur = self.spans[span_id]
        while True:
            if self._is_complete_root(cur):
                return cur.span_id, False
            parent_id = cur.parent_span_id
            assert parent_id is not None
            if parent_id not in self.spans:
                return parent_id, False
            if parent_id in run_spans:
                return parent_id, True
            if parent_id in seen:  # a parent cycle (bad data): treat the span as a root
                return cur.span_id, False
            seen.add(parent_id)
            cur = self.spans[parent_id]

    def _orphan_home(self, top: str, has_agents: bool) -> str | None:
        if top in self.spans and self._is_complete_root(self.spans[top]):
            # Under a root that is not a run (e.g. an HTTP span around the agents): no run,
            # unless the trace has no agent at all, when that root is the run.
            return self.primary if not has_agents else None
        if top in self.spans:  # a cycle top: keep it with the trace's first run
            return self.primary
        # Under a missing parent: the trace's first run once a root is in, else provisional.
        return self.primary if self.has_root and self.primary is not None else top

    def run_start(self, key: str) -> int:
        if key in self.arrived:
            return self.spans[key].start_time_unix_nano
        return min(s.start_time_unix_nano for s in self.members[key])

    def run_of(self, span_id: str) -> str | None:
        return self.owner.get(span_id)


STATUS_OK, STATUS_ERROR = 1, 2  # OTLP status codes
TIMEOUT_WORDS = ("timeout", "timed out", "deadline exceeded", "deadline_exceeded")


def says_timeout(s: SpanFacts) -> bool:
    text = (s.error_type or "").lower()
    if s.status_code == STATUS_ERROR or s.is_error:
        text += " " + (s.status_message or "").lower()
    return any(word in text for word in TIMEOUT_WORDS)


def first_value(spans: Iterable[SpanFacts], field: str) -> str | None:
    for s in spans:
        value = getattr(s, field)
        if value:
            return str(value)
    return None


def workflow_name(run_span: SpanFacts | None, members: list[SpanFacts]) -> str | None:
    """Agent name, else the run span's own name unless generic, else the service."""
    if run_span is None:  # provisional: the root, and so the name, has not arrived
        return first_value(members, "service_name")
    if run_span.agent_name:
        return run_span.agent_name
    name = run_span.name.strip()
    if name and name not in GENERIC_RUN_NAMES:
        return name
    return run_span.service_name or name or None
