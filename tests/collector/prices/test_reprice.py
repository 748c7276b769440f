"""Re-pricing stored LLM and tool calls when prices change (`agentledger prices recompute`), and
the totals of their runs in the same transaction.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.cli import main
from collector.model import Rows, Signal
from collector.pipeline import process_payload
from collector.prices.layers import stack
from collector.prices.reprice import reprice
from collector.progress import Progress
from collector.runs.derive import RunDeriver
from collector.runs.recost import RunTotals
from collector.store.lake import StoreSettings, connect
from collector.store.writer import Store
from processors.cost import CostConfig, CostProcessor, OrgCost, ToolPrice
from processors.normalise.span import NormaliseConfig, NormaliseProcessor
from processors.runs.assemble import RunsConfig, RunsProcessor
from tests.otlp_factory import export_request, kv

ROOT = b"\x09" * 8


def _llm(span_id: int, model: str, cost: float | None = None) -> Span:
    attrs = [
        kv("gen_ai.operation.name", "chat"),
        kv("gen_ai.request.model", model),
        kv("gen_ai.usage.input_tokens", 1_000_000),
        kv("gen_ai.usage.output_tokens", 100_000),
    ]
    if cost is not None:
        attrs.append(kv("gen_ai.usage.cost", cost))
    return Span(
        trace_id=b"\x01" * 16,
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=ROOT,
        name=f"chat {model}",
        start_time_unix_nano=1,
        end_time_unix_nano=2,
        attributes=attrs,
    )


def _search(span_id: int) -> Span:
    return Span(
        trace_id=b"\x01" * 16,
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=ROOT,
        name="execute_tool web_search",
        start_time_unix_nano=3,
        end_time_unix_nano=4,
        attributes=[
            kv("gen_ai.operation.name", "execute_tool"),
            kv("gen_ai.tool.name", "web_search"),
        ],
    )


def _store_spans(tmp_path: Path) -> StoreSettings:
    """Three LLM calls (one unknown model, one carrying its own cost) and an unpriced search in
    each of two orgs, with their runs derived."""
    settings = StoreSettings(
        catalog=str(tmp_path / "catalog.ducklake"), data_path=str(tmp_path / "data")
    )
    store = Store(settings)
    store.open()
    chains = {
        Signal.TRACES: [
            NormaliseProcessor(NormaliseConfig()),
            CostProcessor(CostConfig(), stack(None)),
        ]
    }
    payload = export_request(
        [
            _llm(1, "acme-secret-model"),
            _llm(2, "gpt-4o"),
            _llm(3, "acme-secret-model", cost=9.5),
            _search(4),
        ]
    ).SerializeToString()
    for org in ("acme", "globex"):
        table, _ = process_payload(Signal.TRACES, org, payload, "protobuf", chains)
        asyncio.run(store.append(Rows(Signal.TRACES, org, table)))
    deriver = RunDeriver(store, RunsProcessor(RunsConfig()))
    deriver.create_tables()
    while deriver.step():
        pass
    store.close()
    return settings


def _costs(settings: StoreSettings) -> list[tuple[object, ...]]:
    con = connect(settings)
    rows = con.execute(
        "SELECT org, span_id, cost_source, round(cost_usd, 6) FROM lake.spans ORDER BY org, span_id"
    ).fetchall()
    con.close()
    return rows


def _runs(settings: StoreSettings) -> list[tuple[object, ...]]:
    con = connect(settings)
    rows = con.execute(
        "SELECT org, round(cost_usd, 6), round(tool_cost_usd, 6), cost_unknown_calls "
        "FROM lake.runs ORDER BY org"
    ).fetchall()
    con.close()
    return rows


def test_recompute_prices_calls_and_their_runs_and_keeps_provided_costs(tmp_path: Path) -> None:
    settings = _store_spans(tmp_path)
    gpt4o = _costs(settings)[1][3]
    assert isinstance(gpt4o, float)
    assert _costs(settings)[0][2:] == ("none", None)
    assert _runs(settings) == [("acme", gpt4o + 9.5, 0.0, 1), ("globex", gpt4o + 9.5, 0.0, 1)]

    # An org-specific negotiated price for a model nobody else knows, and a paid search.
    acme = OrgCost(
        models={"acme-secret-model": {"provider": "openai", "input": 1.0, "output": 10.0}},
        tools={"web_search": ToolPrice(per_call=0.01)},
    )
    cost = CostProcessor(CostConfig(orgs={"acme": acme}), stack(None))
    con = connect(settings)
    con.execute("USE lake")
    progress = Progress("re-pricing", stream=io.StringIO())
    result = reprice(con, cost, RunTotals(RunsConfig()), chunk=4, progress=progress)
    con.close()
    # Provided-cost spans are not examined; acme's unknown call and its search changed.
    assert (result.examined, result.changed, result.runs) == (6, 2, 1)
    assert progress.count == 6  # told of every chunk (of at most four calls) as it went
    assert _costs(settings) == [
        ("acme", "0000000000000001", "computed", 2.0),  # 1M·$1 + 0.1M·$10
        ("acme", "0000000000000002", "computed", gpt4o),
        ("acme", "0000000000000003", "provided", 9.5),
        ("acme", "0000000000000004", "computed", 0.01),
        ("globex", "0000000000000001", "none", None),  # the override is acme's alone
        ("globex", "0000000000000002", "computed", gpt4o),
        ("globex", "0000000000000003", "provided", 9.5),
        ("globex", "0000000000000004", None, None),
    ]
    # The run's totals moved with its calls, in the same transaction.
    assert _runs(settings) == [
        ("acme", round(2.0 + gpt4o + 9.5 + 0.01, 6), 0.01, 0),
        ("globex", gpt4o + 9.5, 0.0, 1),
    ]


def test_prices_recompute_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = _store_spans(tmp_path / "data")
    config = tmp_path / "c.yaml"
    config.write_text(
        f'storage: {{path: "{tmp_path / "data"}", catalog: "{settings.catalog}", '
        f'data_path: "{settings.data_path}"}}\n'
        "processors:\n  normalise: {}\n  cost:\n    overrides:\n"
        "      acme-secret-model: {provider: openai, input: 2.0, output: 20.0}\n"
    )
    assert main(["prices", "recompute", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "re-priced 6 LLM and tool calls; 2 changed; totals of 2 runs updated" in out
    # What changed, per model: two unpriced calls now cost 2 x (1M x $2 + 0.1M x $20).
    assert "acme-secret-model: 2 calls, $0.000000 -> $8.000000 (unpriced 2 -> 0)" in out
    assert [r[3] for r in _costs(settings) if r[1] == "0000000000000001"] == [4.0, 4.0]
    assert [r[3] for r in _runs(settings)] == [0, 0]  # no call of either run is unknown now
    # A second run changes nothing.
    assert main(["prices", "recompute", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert "0 changed; totals of 0 runs updated" in out
    assert err == ""  # progress is drawn on a terminal only, never into a pipe


def test_a_bad_override_fails_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "processors:\n  normalise: {}\n  cost:\n    overrides:\n      m: {input: cheap}\n"
    )
    assert main(["validate", "--config", str(config)]) == 2
    assert "processors.cost" in capsys.readouterr().err
