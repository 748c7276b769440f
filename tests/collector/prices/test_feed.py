"""The price feed against a local HTTP server whose price list changes: merged books swapped in,
genai-prices data files used instead of the bundled data, the last good one kept on failures and
across restarts, and decode workers re-priced.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from collector import registry
from collector.config import parse_config
from collector.configparse import ConfigError
from collector.model import Signal
from collector.pipeline import DecodePool
from collector.prices.book import PriceBook
from collector.prices.feed import STATE_FILE, BookSource, PriceFeed, PricesConfig
from collector.prices.pricing import Usage
from collector.telemetry import Metrics
from tests.otlp_factory import export_request, kv
from tests.promtext import metric

GPT4O = "openai/gpt-4o"


def openrouter(prompt_per_token: str) -> dict[str, Any]:
    return {"data": [{"id": GPT4O, "pricing": {"prompt": prompt_per_token, "completion": "1e-5"}}]}


@dataclass
class Upstream:
    """What the fake OpenRouter answers: a status and a body, changeable by the test."""

    status: int = 200
    body: bytes = field(default_factory=lambda: json.dumps(openrouter("0.000004")).encode())
    hits: int = 0


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    state = Upstream()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits += 1
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{httpd.server_address[1]}/api/v1/models"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


LEGACY = Path(__file__).with_name("legacy_book.json")  # an operator's book to merge into


def input_rate(book: PriceBook) -> float:
    """gpt-4o's latest rate (a fetched change is dated the fake clock's day, in 2027)."""
    found = book.lookup("gpt-4o", "openai", datetime(2100, 1, 1, tzinfo=UTC))
    assert found is not None
    return found.rates.input


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "prices.json"
    shutil.copy(LEGACY, path)
    return path


def make_feed(
    base: Path, url: str, clock: Clock, seen: list[PriceBook], metrics: Metrics | None = None
) -> tuple[PriceFeed, BookSource, Metrics]:
    """A feed whose every change appends to `seen` the book a worker process then loads."""
    source = BookSource(str(base), url, str(base.parent / STATE_FILE))
    config = PricesConfig(path=str(base), url=url, refresh_interval_s=3600, retry_interval_s=60)
    metrics = metrics or Metrics()
    feed = PriceFeed(config, source, lambda: seen.append(source.load()), metrics, clock=clock)
    return feed, source, metrics


def test_a_changing_price_list_is_merged_swapped_and_kept(
    upstream: tuple[Upstream, str], base: Path
) -> None:
    state, url = upstream
    clock, seen = Clock(), []
    feed, source, metrics = make_feed(base, url, clock, seen)
    assert input_rate(feed.book) == 2.5  # the shipped rate before the first fetch

    assert feed.tick() == "updated"
    assert [input_rate(b) for b in seen] == [4.0]
    assert input_rate(feed.book) == 4.0 and feed.origin == "fetched"
    # What a worker process loads from the files is the very same book.
    assert source.load() == feed.book
    assert source.load_base().version != feed.book.version

    assert feed.tick() is None  # not due for an hour
    clock.now += 3600
    assert feed.tick() == "unchanged" and len(seen) == 1

    state.body = json.dumps(openrouter("0.000005")).encode()
    clock.now += 3600
    assert feed.tick() == "updated"
    assert input_rate(feed.book) == 5.0 == input_rate(source.load())
    text = metrics.render()
    assert metric(text, "agentledger_price_book_refreshes_total", result="updated") == 2
    assert metric(text, "agentledger_price_book_refreshes_total", result="unchanged") == 1
    info = {"version": feed.book.version, "origin": "fetched", "genai": "genai-prices 0.2.5"}
    assert metric(text, "agentledger_price_book_info", **info) == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"error": "upstream down"}'),
        (200, b"<html>maintenance</html>"),
        (200, b'{"data": []}'),  # valid shape, nothing to price: would silently drop prices
    ],
)
def test_a_failing_fetch_keeps_the_last_good_book_and_is_retried_sooner(
    upstream: tuple[Upstream, str],
    base: Path,
    status: int,
    body: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, url = upstream
    clock, seen = Clock(), []
    feed, source, metrics = make_feed(base, url, clock, seen)
    assert feed.tick() == "updated"
    good = feed.book
    kept = (base.parent / STATE_FILE).read_bytes()

    state.status, state.body = status, body
    clock.now += 3600
    with caplog.at_level(logging.WARNING, "collector.prices.feed"):
        assert feed.tick() == "failed"
    assert feed.book is good and len(seen) == 1
    assert source.load() == good
    assert (base.parent / STATE_FILE).read_bytes() == kept
    assert metrics.value("agentledger_price_book_refreshes_total", result="failed") == 1
    assert "keeping price book" in caplog.text
    last = "agentledger_price_book_last_success_timestamp_seconds"
    assert metric(metrics.render(), last) == 1800000000

    hits = state.hits
    clock.now += 59
    assert feed.tick() is None and state.hits == hits
    state.status, state.body = 200, json.dumps(openrouter("0.000006")).encode()
    clock.now += 1  # the retry interval, not the refresh interval
    assert feed.tick() == "updated" and input_rate(feed.book) == 6.0


def test_a_restart_without_network_keeps_the_fetched_book(
    upstream: tuple[Upstream, str], base: Path
) -> None:
    state, url = upstream
    clock, seen = Clock(), []
    first, _, _ = make_feed(base, url, clock, seen)
    assert first.tick() == "updated"

    state.status = 503  # the network is gone when the service starts again
    clock.now += 60
    again, source, _ = make_feed(base, url, clock, [])
    assert again.origin == "fetched" and input_rate(again.book) == 4.0
    hits = state.hits
    assert again.tick() is None and state.hits == hits  # fetched a minute ago: not due
    assert input_rate(source.load()) == 4.0


def test_the_kept_book_is_dropped_when_the_base_book_or_url_changes(
    upstream: tuple[Upstream, str], base: Path
) -> None:
    state, url = upstream
    clock, seen = Clock(), []
    feed, source, _ = make_feed(base, url, clock, seen)
    assert feed.tick() == "updated"

    other = BookSource(source.path, url + "?v=2", source.state)
    assert input_rate(other.load()) == 2.5  # another URL's book is not this one's

    book = json.loads(base.read_text())
    for model in book["models"]:
        if model["id"] == "gpt-4o":
            model["output"] = 11.0
    base.write_text(json.dumps(book))  # e.g. `agentledger prices update --out` meanwhile
    assert source.load().lookup("gpt-4o", "openai").rates.output == 11.0  # type: ignore[union-attr]
    state.status = 500
    assert feed.tick() == "failed"  # re-read the file at once, then a fetch that fails
    assert input_rate(feed.book) == 2.5 and feed.origin == "file"
    state.status = 200
    clock.now += 60
    assert feed.tick() == "updated"
    merged = feed.book.lookup("gpt-4o", "openai", datetime(2100, 1, 1, tzinfo=UTC))
    assert merged is not None and (merged.rates.input, merged.rates.output) == (4.0, 10.0)


def test_without_a_url_the_book_file_is_watched(base: Path) -> None:
    seen: list[PriceBook] = []
    source = BookSource(str(base))
    feed = PriceFeed(
        PricesConfig(path=str(base)), source, lambda: seen.append(source.load()), Metrics()
    )
    assert feed.tick() is None
    base.write_text(
        base.read_text().replace('"input": 2.5, "output": 10.0', '"input": 3.0, "output": 10.0', 1)
    )
    assert feed.tick() == "reloaded" and input_rate(seen[-1]) == 3.0
    base.write_text("{broken")
    assert feed.tick() == "failed" and input_rate(feed.book) == 3.0


def genai_data(input_mtok: str) -> list[dict[str, Any]]:
    """A genai-prices data file (its `data.json` shape) with one provider and one model."""
    model = {"id": "acme-1", "match": {"equals": "acme-1"}}
    model["prices"] = {"input_mtok": input_mtok, "output_mtok": "2"}
    provider = {"id": "acme", "name": "Acme", "api_pattern": "https://acme"}
    return [{**provider, "model_match": {"starts_with": "acme"}, "models": [model]}]


def test_a_genai_prices_data_file_replaces_the_bundled_data_and_is_kept(
    upstream: tuple[Upstream, str], base: Path
) -> None:
    state, url = upstream
    state.body = json.dumps(genai_data("1.5")).encode()
    clock, seen = Clock(), []
    feed, source, metrics = make_feed(base, url, clock, seen)
    million, at = Usage(input=1_000_000), datetime(2026, 6, 1, tzinfo=UTC)

    def acme_1(source: BookSource) -> float | None:
        quote = source.pricing().quote("acme-1", None, million, at, None)
        if quote is None:
            return None
        assert (quote.source, quote.version) == ("genai-prices", "genai-prices data of 2027-01-15")
        return quote.usd

    assert acme_1(source) is None  # the bundled data does not know it
    assert feed.tick() == "updated" and len(seen) == 1 and feed.origin == "fetched"
    assert acme_1(source) == 1.5
    # The books above it still answer first: gpt-4o is in the operator's book.
    gpt4o = source.pricing().quote("gpt-4o", "openai", million, at, None)
    assert gpt4o is not None and gpt4o.source == "operator"
    info = {"origin": "fetched", "genai": "genai-prices data of 2027-01-15"}
    assert metric(metrics.render(), "agentledger_price_book_info", **info) == 1

    clock.now += 3600
    assert feed.tick() == "unchanged" and len(seen) == 1
    state.body = json.dumps([{"id": "acme", "models": "none"}]).encode()  # refused whole
    clock.now += 3600
    assert feed.tick() == "failed" and acme_1(source) == 1.5

    # A changed operator book is swapped in under the same fetched data, not fetched over.
    hits = state.hits
    base.write_text(
        base.read_text().replace('"input": 2.5, "output": 10.0', '"input": 3.0, "output": 10.0', 1)
    )
    assert feed.tick() == "reloaded" and state.hits == hits and acme_1(source) == 1.5
    assert feed.origin == "fetched" and len(seen) == 2

    state.status = 503  # a restart without network keeps the fetched data
    again, source, _ = make_feed(base, url, clock, [])
    assert again.origin == "fetched" and again.genai == "genai-prices data of 2027-01-15"
    assert acme_1(source) == 1.5


def test_config_names_the_book_and_the_feed(tmp_path: Path) -> None:
    raw = {
        "storage": {"path": str(tmp_path)},
        "prices": {"path": str(LEGACY), "url": "https://x/api/v1/models"},
    }
    parts = registry.components(parse_config(raw, {}))
    assert parts.prices == BookSource(
        str(LEGACY), "https://x/api/v1/models", str(tmp_path / STATE_FILE),
        str(tmp_path / "prices.json"),
    )  # fmt: skip
    with pytest.raises(ConfigError) as bad:
        parse_config({"prices": {"url": "ftp://x", "refresh_interval_s": 0, "path": ""}}, {})
    assert sorted(i.path for i in bad.value.issues) == [
        "prices.path", "prices.refresh_interval_s", "prices.url",
    ]  # fmt: skip
    with pytest.raises(ConfigError) as missing:
        registry.components(parse_config({"prices": {"path": str(tmp_path / "nope.json")}}, {}))
    assert [i.path for i in missing.value.issues] == ["prices.path"]


def llm_payload() -> bytes:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    span = Span(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        name="chat gpt-4o",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_001_000_000_000,
        attributes=[
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.provider.name", "openai"),
            kv("gen_ai.request.model", "gpt-4o"),
            kv("gen_ai.usage.input_tokens", 1_000_000),
            kv("gen_ai.usage.output_tokens", 0),
        ],
    )
    return export_request([span]).SerializeToString()


@pytest.mark.parametrize("workers", [0, 1])
def test_decode_workers_price_with_the_new_book_after_a_reload(
    upstream: tuple[Upstream, str], tmp_path: Path, workers: int
) -> None:
    _, url = upstream
    config = parse_config({"storage": {"path": str(tmp_path)}, "prices": {"url": url}}, {})
    parts = registry.components(config)
    pool = DecodePool(workers, registry.processor_factory(parts))
    pool.start()

    def cost() -> float:
        import asyncio

        rows = asyncio.run(pool.run(Signal.TRACES, "acme", llm_payload(), "protobuf"))
        return float(rows.table.column("cost_usd")[0].as_py())

    try:
        assert cost() == 2.5
        feed = PriceFeed(config.prices, parts.prices, pool.reload, Metrics())
        assert feed.tick() == "updated"
        assert cost() == 4.0
        cost_processor = registry.build_processor(parts, "cost")  # what a restart builds
        assert cost_processor is not None
        pricing = cost_processor.pricing_for("acme")  # type: ignore[attr-defined]
        assert pricing.version.startswith(f"{feed.book.version}+")  # the operator's book on top
    finally:
        pool.shutdown()
