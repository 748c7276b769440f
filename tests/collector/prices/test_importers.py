"""OpenRouter and LiteLLM price lists convert to exact book rates and merge over the book.

Hand-written samples; the CLI is driven end to end against a local HTTP server on port 0.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from collector.cli import main
from collector.prices import importers as priceimport
from collector.prices.book import SHIPPED_PATH, load_price_book, parse_price_book

OPENROUTER: dict[str, Any] = {
    "data": [
        {
            "id": "anthropic/claude-sonnet-4",
            "pricing": {
                "prompt": "0.000002",
                "completion": "0.00001",
                "input_cache_read": "0.0000002",
                "input_cache_write": "0.0000025",
                "internal_reasoning": "0",
            },
            "context_length": 1000000,
        },
        {
            "id": "openai/o9-mini",
            "pricing": {
                "prompt": "0.0000011",
                "completion": "0.0000044",
                "internal_reasoning": "0.000005",
            },
        },
        {"id": "openai/gpt-4o:free", "pricing": {"prompt": "0", "completion": "0"}},
        {"id": "openrouter/auto", "pricing": {"prompt": "-1", "completion": "-1"}},
        {"id": "openai/broken", "pricing": {"prompt": "cheap", "completion": "0.00001"}},
        "not an object",
    ]
}

LITELLM: dict[str, Any] = {
    "sample_spec": {"input_cost_per_token": 0, "mode": "one of chat, embedding, ..."},
    "gemini/gemini-2.5-pro": {
        "litellm_provider": "gemini",
        "mode": "chat",
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 8e-06,
        "cache_read_input_token_cost": 1e-07,
        "input_cost_per_token_above_200k_tokens": 2e-06,
        "output_cost_per_token_above_200k_tokens": 1.2e-05,
        "cache_read_input_token_cost_above_200k_tokens": 2e-07,
    },
    "gpt-4o-2025-01-01": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.2e-05,
    },
    "o9": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 2e-06,
        "output_cost_per_token": 8e-06,
        "cache_creation_input_token_cost": 2.5e-06,
        "output_cost_per_reasoning_token": 9e-06,
    },
    "text-embedding-3-small": {
        "litellm_provider": "openai",
        "mode": "embedding",
        "input_cost_per_token": 2e-08,
        "output_cost_per_token": 0,
    },
    "azure/gpt-4o": {
        "litellm_provider": "azure",
        "mode": "chat",
        "input_cost_per_token": 2.75e-06,
        "output_cost_per_token": 1.1e-05,
    },
    "gpt-broken": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": "x"},
}

TODAY = date(2027, 1, 15)


# An operator's book to merge into: the hand-kept book genai-prices replaced.
LEGACY = Path(__file__).with_name("legacy_book.json")
WHEN = datetime(2027, 1, 15, 12, tzinfo=UTC)


def _shipped() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(LEGACY.read_text(encoding="utf-8"))
    return data


def test_detects_both_formats_and_refuses_others() -> None:
    assert priceimport.detect_format(OPENROUTER) == "openrouter"
    assert priceimport.detect_format(LITELLM) == "litellm"
    garbage: Any
    for garbage in ({"models": 1}, "x", {"a": 1}):
        with pytest.raises(ValueError, match="not a price list"):
            priceimport.detect_format(garbage)
    with pytest.raises(ValueError, match="genai-prices data file"):
        priceimport.detect_format([])


def test_openrouter_rates_per_million_with_variants_and_bad_entries_skipped() -> None:
    got = priceimport.from_openrouter(OPENROUTER)
    assert got.entries == (
        {
            "id": "claude-sonnet-4",
            "provider": "anthropic",
            "openrouter_id": "anthropic/claude-sonnet-4",
            "input": 2.0,
            "output": 10.0,
            "cache_read": 0.2,
            "cache_write": 2.5,
        },  # reasoning "0" means billed as output, so it is left to default
        {
            "id": "o9-mini",
            "provider": "openai",
            "openrouter_id": "openai/o9-mini",
            "input": 1.1,
            "output": 4.4,
            "reasoning": 5.0,
        },
    )
    assert len(got.skipped) == 4
    assert any("variant" in s for s in got.skipped)


def test_litellm_rates_tiers_and_skips() -> None:
    got = {e["id"]: e for e in priceimport.from_litellm(LITELLM).entries}
    assert set(got) == {"gemini-2.5-pro", "gpt-4o-2025-01-01", "o9"}
    assert got["gemini-2.5-pro"] == {
        "id": "gemini-2.5-pro",
        "provider": "gcp.gemini",
        "input": 1.0,
        "output": 8.0,
        "cache_read": 0.1,
        "tiers": [{"above_input_tokens": 200000, "input": 2.0, "output": 12.0, "cache_read": 0.2}],
    }
    assert got["o9"] == {
        "id": "o9",
        "provider": "openai",
        "input": 2.0,
        "output": 8.0,
        "cache_write": 2.5,
        "reasoning": 9.0,
    }
    skipped = priceimport.from_litellm(LITELLM).skipped
    assert sorted(s.split(":")[0] for s in skipped) == [
        "azure/gpt-4o",
        "gpt-broken",
        "text-embedding-3-small",
    ]


def test_merge_updates_exact_names_adds_new_and_keeps_the_rest() -> None:
    shipped = _shipped()
    entries = (
        priceimport.from_litellm(LITELLM).entries + priceimport.from_openrouter(OPENROUTER).entries
    )
    merged = priceimport.merge(shipped, entries, TODAY)
    assert (merged.updated, merged.added) == (2, 3)
    book = parse_price_book(merged.book)
    assert book.version == "2027-01-15.1" and book.compiled_at == "2027-01-15"
    # 3 new models, and a version dated today of each of the 2 updated ones (the old stay).
    assert len(book.models) == len(shipped["models"]) + 3 + 2
    before = book.lookup("gemini-2.5-pro", None, datetime(2027, 1, 14, tzinfo=UTC))
    assert before is not None and before.rates.input == 1.25 and before.effective_from is None

    gemini = book.lookup("gemini-2.5-pro", None, WHEN)
    assert gemini is not None and gemini.rates.input == 1.0 and gemini.rates.cache_write == 1.25
    assert gemini.tiers[0][1].output == 12.0 and gemini.aliases  # aliases kept
    sonnet = book.lookup("claude-sonnet-4", None, WHEN)
    assert sonnet is not None and sonnet.id == "claude-sonnet-4-20250514"
    assert (sonnet.rates.input, sonnet.rates.cache_write, sonnet.rates.reasoning) == (
        2.0,
        2.5,
        15.0,
    )
    assert sonnet.tiers[0][0] == 200000  # the source had no tiers: the book's are kept
    # A dated name that only resolves by stripping its date is a model of its own.
    gpt4o = book.lookup("gpt-4o", None, WHEN)
    assert gpt4o is not None and gpt4o.rates.input == 2.5
    dated = book.lookup("gpt-4o-2025-01-01", None, WHEN)
    assert dated is not None and dated.id == "gpt-4o-2025-01-01" and dated.rates.input == 3.0
    assert book.lookup("o9-mini", None, WHEN) is not None
    assert book.lookup("o9", None, WHEN) is not None
    kept = book.lookup("gpt-5", None, WHEN)
    assert kept is not None and kept.rates.input == 1.25

    again = priceimport.merge(merged.book, (), TODAY)
    assert again.book["version"] == "2027-01-15.2"
    assert shipped == _shipped(), "merge must not mutate its input"


def test_dumps_book_reproduces_the_shipped_layout() -> None:
    text = SHIPPED_PATH.read_text(encoding="utf-8")
    assert priceimport.dumps_book(json.loads(text)) == text


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {
        "/api/v1/models": json.dumps(OPENROUTER).encode(),
        "/garbage": b"<html>not json</html>",
        "/litellm.json": json.dumps(LITELLM).encode(),
    }

    def do_GET(self) -> None:
        body = self.routes.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body or b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "prices.json"
    shutil.copy(LEGACY, path)
    return path


def test_cli_updates_the_book_from_openrouter_over_http(
    server: str, out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prices", "update", "--from", f"{server}/api/v1/models", "--out", str(out)]) == 0
    assert "1 updated, 1 added" in capsys.readouterr().out
    book = load_price_book(out)
    sonnet = book.lookup("anthropic/claude-sonnet-4", "anthropic", datetime.now(UTC))
    assert sonnet is not None and sonnet.rates_for(1000).input == 2.0
    assert sonnet.rates_for(300_000).input == 6.0
    legacy = load_price_book(LEGACY)
    assert book.version != legacy.version and len(book.models) == len(legacy.models) + 2
    assert list(out.parent.iterdir()) == [out], "no temp file left behind"


def test_cli_reads_litellm_from_a_path(tmp_path: Path, out: Path) -> None:
    source = tmp_path / "litellm.json"
    source.write_text(json.dumps(LITELLM), encoding="utf-8")
    assert main(["prices", "update", "--from", str(source), "--out", str(out)]) == 0
    gemini = load_price_book(out).lookup("gemini/gemini-2.5-pro")
    assert gemini is not None and gemini.rates_for(250_000).output == 12.0


@pytest.mark.parametrize("path", ["/missing", "/garbage"])
def test_cli_failure_leaves_the_book_untouched(
    server: str, out: Path, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = out.read_bytes()
    assert main(["prices", "update", "--from", f"{server}{path}", "--out", str(out)]) == 1
    assert "price book not updated" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert list(out.parent.iterdir()) == [out]
