"""Tests for `processors/runs/assemble.py` (with `runtree.py` and `loops.py`): run assembly from the
normalised facts of one trace's spans, built here by hand, with no store involved.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from processors.runs import rows as runrows
from processors.runs.assemble import (
    RunRow,
    RunsConfig,
    RunsProcessor,
    SpanFacts,
    TraceRuns,
    assemble,
)

T = "ab" * 16
OTHER = "cd" * 16
S = 1_000_000_000  # one second in ns
T0 = 1_700_000_000 * S
CFG = RunsConfig()
NOW = T0 + 60 * S


def sid(n: int) -> str:
    return f"{n:016x}"


def span(n: int, parent: int | None, kind: str = "other", **kw: Any) -> SpanFacts:
    values: dict[str, Any] = {
        "org": "acme",
        "trace_id": T,
        "span_id": sid(n),
        "parent_span_id": sid(parent) if parent is not None else None,
        "name": f"span-{n}",
        "start_time_unix_nano": T0 + n * S,
        "end_time_unix_nano": T0 + n * S + S // 2,
        "span_type": kind,
        "received_ns": T0 + 30 * S,
        "service_name": "svc",
    }
    values.update(kw)
    return SpanFacts(**values)


def agent(n: int, parent: int | None, name: str | None = "triage", **kw: Any) -> SpanFacts:
    kw.setdefault("end_time_unix_nano", T0 + 100 * S)
    return span(n, parent, "agent", agent_name=name, name=f"invoke_agent {name}", **kw)


def llm(n: int, parent: int, inp: int = 100, out: int = 10, cost: float | None = 0.01, **kw: Any):  # type: ignore[no-untyped-def]
    return span(n, parent, "llm", input_tokens=inp, output_tokens=out, cost_usd=cost, **kw)


def tool(n: int, parent: int, name: str = "search", args: str | None = '{"q": 1}', **kw: Any):  # type: ignore[no-untyped-def]
    return span(n, parent, "tool", tool_name=name, tool_args=args, **kw)


def runs_of(spans: list[SpanFacts], now: int = NOW, **kw: Any) -> dict[str, RunRow]:
    return {r.span_id: r for r in assemble(spans, now, CFG, **kw).runs}


def rid(n: int, trace: str = T) -> str:
    return trace + sid(n)


def nested() -> list[SpanFacts]:
    return [
        agent(1, None, session_id="sess-1", user_id="u-1", status_code=1),
        llm(2, 1, input_text="plan"),
        agent(3, 1, name="researcher"),
        llm(4, 3, inp=200, out=20, cost=0.02),
        tool(5, 3),
        tool(6, 3, name="fetch"),
        llm(7, 1, inp=50, out=5, cost=None, output_text="done"),
    ]


def test_nested_agents_are_child_runs_and_calls_belong_to_the_nearest_run() -> None:
    result = assemble(nested(), NOW, CFG)
    runs = {r.span_id: r for r in result.runs}
    top, child = runs[sid(1)], runs[sid(3)]
    assert top.run_id == rid(1) and top.parent_run_id is None
    assert child.parent_run_id == rid(1)
    assert (top.llm_call_count, top.tool_use_count) == (2, 0)
    assert (child.llm_call_count, child.tool_use_count) == (1, 2)
    assert (top.workflow_name, child.workflow_name) == ("triage", "researcher")
    assert {s.span_id: s.run_id for s in result.span_runs} == {
        sid(1): rid(1), sid(2): rid(1), sid(7): rid(1),
        sid(3): rid(3), sid(4): rid(3), sid(5): rid(3), sid(6): rid(3),
    }  # fmt: skip
    # Session and user are inherited from the run root by the child run.
    assert (child.session_id, child.user_id) == ("sess-1", "u-1")
    assert top.status == child.status == "success"
    assert top.input_excerpt == "plan" and top.output_excerpt == "done"


def test_a_run_lists_its_own_llm_and_tool_spans_by_start_as_span_runs_has_them() -> None:
    spans = [*nested(), llm(8, 1, start_time_unix_nano=T0 + S // 2)]  # starts before span 2
    result = assemble(spans, NOW, CFG)
    runs = {r.span_id: r for r in result.runs}
    assert runs[sid(1)].call_span_ids == bytes.fromhex(sid(8) + sid(2) + sid(7))
    assert runs[sid(3)].call_span_ids == bytes.fromhex(sid(4) + sid(5) + sid(6))
    for run in result.runs:
        members = sorted(
            (s.start_time_unix_nano, s.span_id)
            for s in result.span_runs
            if s.run_id == run.run_id and s.span_type in ("llm", "tool")
        )
        assert run.call_span_ids == bytes.fromhex("".join(i for _, i in members))


def test_a_run_with_more_calls_than_can_be_listed_lists_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runrows, "MAX_LISTED_CALLS", 2)
    runs = runs_of(nested())
    assert runs[sid(1)].call_span_ids == bytes.fromhex(sid(2) + sid(7))
    assert runs[sid(3)].call_span_ids is None  # three: its detail asks span_runs


def test_a_run_with_a_span_id_not_16_lowercase_hex_lists_none() -> None:
    for odd in ("not-hex", "abcd", "ABCDEF0123456789", "00 11 22 33 44 55 66 77"):
        runs = runs_of([agent(1, None), llm(2, 1), llm(3, 1, span_id=odd)])
        assert runs[sid(1)].call_span_ids is None


def test_tokens_and_cost_sum_the_runs_own_llm_calls_without_aggregates() -> None:
    spans = nested()
    # The agent spans repeat their children's usage: it must not be added on top.
    spans[0] = spans[0]._replace(input_tokens=350, output_tokens=35, usage_is_aggregate=True)
    spans[2] = spans[2]._replace(input_tokens=200, output_tokens=20, usage_is_aggregate=True)
    runs = runs_of(spans)
    top, child = runs[sid(1)], runs[sid(3)]
    assert (top.input_tokens, top.output_tokens, top.total_tokens) == (150, 15, 165)
    assert top.cost_usd == pytest.approx(0.01)
    assert top.cost_unknown_calls == 1  # span 7 has no cost
    assert (child.input_tokens, child.total_tokens, child.cost_usd) == (200, 220, 0.02)


def test_run_level_aggregate_counts_only_without_llm_children() -> None:
    alone = agent(1, None, input_tokens=900, output_tokens=100, usage_is_aggregate=True)
    assert runs_of([alone, tool(2, 1)])[sid(1)].total_tokens == 1000
    # With a run below that reported usage, the parent's aggregate would count it twice.
    spans = [alone, agent(2, 1, name="sub"), llm(3, 2, inp=700, out=70)]
    runs = runs_of(spans)
    assert runs[sid(1)].total_tokens == 0
    assert runs[sid(2)].total_tokens == 770


def test_an_llm_span_wrapping_another_is_one_call_counted_once() -> None:
    wrapper = llm(2, 1, inp=100, out=10, cost=0.5)
    inner = llm(3, 2, inp=100, out=10, cost=0.01)
    runs = runs_of([agent(1, None), wrapper, inner])
    assert runs[sid(1)].llm_call_count == 1
    assert (runs[sid(1)].total_tokens, runs[sid(1)].cost_usd) == (110, 0.01)
    # When only the wrapper reports usage, the wrapper's usage counts.
    bare = inner._replace(input_tokens=None, output_tokens=None, cost_usd=None)
    runs = runs_of([agent(1, None), wrapper, bare])
    assert (runs[sid(1)].total_tokens, runs[sid(1)].cost_unknown_calls) == (110, 0)


def test_running_until_the_root_arrives_then_success() -> None:
    children = [llm(2, 1), tool(3, 1)]
    [run] = runs_of(children).values()
    # Named after the missing parent: the id the run keeps once its root arrives.
    assert (run.run_id, run.status, run.ended_at, run.duration_ms) == (
        rid(1),
        "running",
        None,
        None,
    )
    assert run.workflow_name == "svc"
    [done] = runs_of([*children, agent(1, None)]).values()
    assert (done.run_id, done.status, done.llm_call_count) == (rid(1), "success", 1)
    assert done.duration_ms == 99_000


def test_timeout_when_no_root_arrives_in_time() -> None:
    children = [llm(2, 1), tool(3, 1)]
    last = T0 + 30 * S  # received_ns of every span
    assert runs_of(children, now=last + 3599 * S)[sid(1)].status == "running"
    timed_out = runs_of(children, now=last + 3600 * S)[sid(1)]
    assert timed_out.status == "timeout"
    assert timed_out.ended_at is not None
    # A root arriving later still decides.
    assert runs_of([*children, agent(1, None)], now=last + 9999 * S)[sid(1)].status == "success"


def test_root_error_and_root_timeout() -> None:
    failed = agent(1, None, status_code=2, is_error=True, error_type="ValueError")
    run = runs_of([failed, llm(2, 1)])[sid(1)]
    assert (run.status, run.error_type, run.error_count) == ("error", "ValueError", 1)
    slow = agent(1, None, status_code=2, is_error=True, error_type="asyncio.TimeoutError")
    assert runs_of([slow])[sid(1)].status == "timeout"
    by_message = agent(1, None, status_code=2, is_error=True, status_message="Request timed out")
    assert runs_of([by_message])[sid(1)].status == "timeout"


def test_a_child_error_is_the_runs_error_only_when_nothing_happened_after_it() -> None:
    boom = tool(3, 1, is_error=True, error_type="ToolError", status_code=2)
    run = runs_of([agent(1, None), llm(2, 1), boom])[sid(1)]
    assert (run.status, run.error_type) == ("error", "ToolError")
    # The agent went on after the failure: it handled it.
    handled = runs_of([agent(1, None), llm(2, 1), boom, llm(4, 1)])[sid(1)]
    assert (handled.status, handled.error_count) == ("success", 1)
    # An explicit OK on the root says it survived.
    ok = runs_of([agent(1, None, status_code=1), llm(2, 1), boom])[sid(1)]
    assert ok.status == "success"
    # A failed child run ends its parent the same way.
    spans = [agent(1, None), agent(2, 1, name="sub", status_code=2, is_error=True), llm(3, 2)]
    assert runs_of(spans)[sid(1)].status == "error"


def test_loop_detected_at_the_threshold() -> None:
    four = [agent(1, None)] + [tool(n, 1, args='{"q": 1, "p": 2}') for n in range(2, 6)]
    assert runs_of(four)[sid(1)].status == "success"
    # Same arguments spelt with another key order still repeat.
    five = [*four, tool(6, 1, args='{"p": 2, "q": 1}')]
    run = runs_of(five)[sid(1)]
    assert run.status == "loop_detected"
    assert run.loop_detail == "tool search called 5 times with the same arguments"
    differing = [*four, tool(6, 1, args='{"q": 2}')]
    assert runs_of(differing)[sid(1)].status == "success"
    # No recorded arguments is no evidence of equal arguments.
    bare = [agent(1, None)] + [tool(n, 1, args=None) for n in range(2, 9)]
    assert runs_of(bare)[sid(1)].loop_detail is None
    # An error outranks the loop; the detail stays for alert rules.
    failed = [five[0]._replace(status_code=2, is_error=True), *five[1:]]
    run = runs_of(failed)[sid(1)]
    assert (run.status, run.loop_detail is not None) == ("error", True)


def test_repeated_llm_input_is_a_loop_unless_cut_at_the_excerpt_limit() -> None:
    same = [agent(1, None)] + [llm(n, 1, input_text="what now?") for n in range(2, 7)]
    assert runs_of(same)[sid(1)].loop_detail == "the same LLM input sent 5 times"
    long = "x" * CFG.excerpt_chars
    cut = [agent(1, None)] + [llm(n, 1, input_text=long) for n in range(2, 9)]
    assert runs_of(cut)[sid(1)].status == "success"


def test_loop_threshold_is_configurable() -> None:
    spans = [agent(1, None)] + [tool(n, 1) for n in range(2, 5)]
    [run] = assemble(spans, NOW, RunsConfig(loop_threshold=3)).runs
    assert run.status == "loop_detected"


def _complex_trace() -> list[SpanFacts]:
    spans = [*nested(), tool(8, 5, name="inner"), llm(9, 3, inp=5, out=1)]
    spans += [tool(n, 3, args='{"same": true}') for n in range(10, 16)]
    spans += [llm(20, 19), tool(21, 19)]  # hanging under a missing span 19
    spans.append(spans[3])  # a stored duplicate
    return spans


def test_output_is_the_same_whatever_the_span_order() -> None:
    spans = _complex_trace()
    expected = assemble(spans, NOW, CFG)
    rng = random.Random(7)
    for _ in range(25):
        shuffled = spans[:]
        rng.shuffle(shuffled)
        assert assemble(shuffled, NOW, CFG) == expected
    # And prefixes of the arrival order never crash, each giving a sorted answer.
    for k in range(1, len(spans)):
        result = assemble(spans[:k], NOW, CFG)
        assert [r.run_id for r in result.runs] == sorted(r.run_id for r in result.runs)


def test_duplicates_are_counted_once() -> None:
    spans = nested()
    assert assemble(spans + spans, NOW, CFG) == assemble(spans, NOW, CFG)


def test_trace_without_agent_spans_is_one_run_at_its_root() -> None:
    spans = [span(1, None, name="POST /chat"), llm(2, 1), tool(3, 2), span(4, 1)]
    [run] = runs_of(spans).values()
    assert (run.run_id, run.workflow_name, run.status) == (rid(1), "POST /chat", "success")
    assert (run.llm_call_count, run.tool_use_count) == (1, 1)


def test_workflow_name_falls_back_to_span_name_then_service() -> None:
    assert runs_of([agent(1, None, name=None)])[sid(1)].workflow_name == "invoke_agent None"
    generic = agent(1, None, name=None)._replace(name="invoke_agent")
    assert runs_of([generic])[sid(1)].workflow_name == "svc"


def test_a_remote_parent_makes_a_local_root_and_no_phantom_run() -> None:
    remote = span(1, 99, name="GET /agent", flags=0x300)
    [run] = runs_of([remote, llm(2, 1)]).values()
    assert (run.run_id, run.status) == (rid(1), "success")
    # An agent under a parent that never comes is its own top-level run, not a provisional one.
    [run] = runs_of([agent(1, 99), llm(2, 1)]).values()
    assert (run.run_id, run.parent_run_id, run.status) == (rid(1), None, "success")


def test_spans_outside_any_agent_belong_to_no_run() -> None:
    spans = [span(1, None, name="POST /chat"), llm(2, 1), agent(3, 1), llm(4, 3)]
    result = assemble(spans, NOW, CFG)
    assert [r.run_id for r in result.runs] == [rid(3)]
    assert {s.span_id for s in result.span_runs} == {sid(3), sid(4)}


def test_a_linked_run_is_a_child_of_the_run_it_links_into() -> None:
    parent_trace = [
        agent(1, None)._replace(trace_id=OTHER, start_time_unix_nano=T0 - 10 * S),
        tool(2, 1)._replace(trace_id=OTHER, start_time_unix_nano=T0 - 9 * S),
    ]
    child = agent(5, None, name="worker", links=((OTHER, sid(2)),))
    [run] = assemble([child], NOW, CFG, linked=parent_trace).runs
    assert (run.parent_run_id, run.link_trace_id) == (OTHER + sid(1), OTHER)
    # Before the linked trace is known, the link is kept so the deriver can come back.
    [run] = assemble([child], NOW, CFG).runs
    assert (run.parent_run_id, run.link_trace_id) == (None, OTHER)


def test_processor_reads_store_rows() -> None:
    from datetime import UTC, datetime

    row = {
        "org": "acme",
        "trace_id": T,
        "span_id": sid(1),
        "parent_span_id": None,
        "name": "invoke_agent x",
        "start_time_unix_nano": T0,
        "end_time_unix_nano": T0 + S,
        "status_code": None,
        "links": f'[{{"trace_id": "{OTHER}", "span_id": "{sid(2)}"}}]',
        "received_at": datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        "span_type": "agent",
        "agent_name": "x",
    }
    out = RunsProcessor(CFG).assemble([row], NOW, [])
    [run] = out["runs"]
    assert (run["status"], run["link_trace_id"], run["last_span_at"]) == (
        "success",
        OTHER,
        row["received_at"],
    )
    assert [s["span_id"] for s in out["span_runs"]] == [sid(1)]


def test_config_validates() -> None:
    with pytest.raises(ValueError, match="loop_threshold"):
        RunsConfig(loop_threshold=1)
    with pytest.raises(ValueError, match="root_timeout_s"):
        RunsConfig(root_timeout_s=0)


def test_empty_and_mixed_input() -> None:
    assert assemble([], NOW, CFG) == TraceRuns()
    with pytest.raises(ValueError, match="more than one"):
        assemble([span(1, None), span(2, None)._replace(trace_id=OTHER)], NOW, CFG)


def test_priced_tool_calls_count_in_the_run_cost() -> None:
    """A paid search beside the LLM calls: run cost = LLM + tools, and the tool part apart;
    a tool span wrapping another is one call (only the inner one's cost counts)."""
    rows = runs_of(
        [
            agent(1, None),
            llm(2, 1, cost=0.01),
            tool(3, 1, name="web_search", cost_usd=0.005, cost_source="computed"),
            tool(4, 1, name="scrape_outer", cost_usd=0.5, cost_source="computed"),
            tool(5, 4, name="scrape", cost_usd=0.002, cost_source="computed"),
            tool(6, 1, name="calculator"),  # not priced
        ]
    )
    run = rows[f"{1:016x}"]
    assert run.tool_cost_usd == pytest.approx(0.007)
    assert run.cost_usd == pytest.approx(0.017)
    assert run.cost_unknown_calls == 0  # unpriced tools are not unknown LLM calls
