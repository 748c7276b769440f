"""Price books load, model names in their many spellings find their entry, dated entries apply
from their day, and the shipped corrections book says where each price came from.

Matching is checked on `legacy_book.json` (the hand-kept 161-model book genai-prices replaced).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.prices.book import PriceBook, candidate_names, load_price_book, parse_price_book

LEGACY = Path(__file__).with_name("legacy_book.json")


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return load_price_book(LEGACY)


def test_shipped_corrections_name_their_source() -> None:
    shipped = load_price_book()
    assert shipped.version and shipped.compiled_at and shipped.models
    assert all(m.source for m in shipped.models)


def test_dated_entries_apply_from_their_day() -> None:
    dated = parse_price_book({"version": "1", "compiled_at": "2026-01-01", "models": [
        {"id": "m", "input": 1, "output": 1},
        {"id": "m", "input": 2, "output": 2, "effective_from": "2026-03-01"},
        {"id": "n", "input": 3, "output": 3, "effective_from": "2026-03-01"},
    ]})  # fmt: skip
    before, after = datetime(2026, 2, 28, 23, 59, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    assert [dated.lookup("m", None, t).rates.input for t in (before, after)] == [1, 2]  # type: ignore[union-attr]
    assert dated.lookup("n", None, before) is None  # nothing said of the days before
    with pytest.raises(ValueError, match="effective_from"):
        parse_price_book({"version": "1", "compiled_at": "x", "models": [
            {"id": "m", "input": 1, "output": 1, "effective_from": "March"}]})  # fmt: skip


def test_legacy_book_has_every_vendor(book: PriceBook) -> None:
    assert book.version and book.compiled_at
    assert len(book.models) >= 150
    providers = {m.provider for m in book.models}
    expected = {"openai", "anthropic", "gcp.gemini", "mistral_ai", "deepseek", "x_ai", "cohere"}
    assert expected | {"aws.bedrock", "groq", "together_ai"} <= providers
    assert all(m.rates.input >= 0 and m.rates.output >= 0 for m in book.models)


@pytest.mark.parametrize(
    ("name", "expected_id"),
    [
        ("gpt-4o", "gpt-4o"),
        ("GPT-4o", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # exact dated id before the alias
        ("azure/gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4-1106-preview", "gpt-4-turbo"),
        ("anthropic/claude-sonnet-4", "claude-sonnet-4-20250514"),
        ("anthropic/claude-3.5-sonnet", "claude-3-5-sonnet-20241022"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet-20241022"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet-20241022"),
        ("us.anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3-7-sonnet-20250219"),
        ("bedrock/eu.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4-20250514"),
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet-20241022"),
        ("claude-3-5-haiku@20241022", "claude-3-5-haiku-20241022"),
        ("models/gemini-1.5-pro", "gemini-1.5-pro"),
        ("gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("google/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini-2.5-pro-preview-05-06", "gemini-2.5-pro"),
        ("gemini-2.5-flash-preview-04-17", "gemini-2.5-flash-preview-04-17"),
        ("deepseek/deepseek-r1:free", "deepseek-reasoner"),
        ("mistral-large-latest", "mistral-large-2512"),
        ("codestral-latest", "codestral-2508"),
        ("x-ai/grok-4", "grok-4"),
        ("command-r-plus", "command-r-plus-08-2024"),
        ("amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
        ("us.amazon.nova-lite-v1:0", "amazon.nova-lite-v1:0"),
    ],
)
def test_lookup_matches_spellings(book: PriceBook, name: str, expected_id: str) -> None:
    found = book.lookup(name, None)
    assert found is not None, name
    assert found.id == expected_id


def test_unknown_model_is_none(book: PriceBook) -> None:
    assert book.lookup("totally-made-up-model", "openai") is None


def test_provider_picks_the_host(book: PriceBook) -> None:
    together = book.lookup("llama-3.3-70b-instruct", None)
    groq = book.lookup("llama-3.3-70b-instruct", "groq")
    bedrock = book.lookup("llama-3.3-70b-instruct", "aws.bedrock")
    assert together is not None and together.provider == "together_ai"
    assert groq is not None and groq.id == "llama-3.3-70b-versatile"
    assert bedrock is not None and bedrock.rates.input == pytest.approx(0.72)


def test_known_prices(book: PriceBook) -> None:
    sonnet = book.lookup("claude-sonnet-4-5", "anthropic")
    assert sonnet is not None
    r = sonnet.rates
    assert (r.input, r.output, r.cache_read, r.cache_write) == (3.0, 15.0, 0.3, 3.75)
    assert sonnet.rates_for(250_000).input == 6.0
    assert sonnet.rates_for(100_000).input == 3.0
    mini = book.lookup("gpt-4o-mini", "openai")
    assert mini is not None
    assert (mini.rates.input, mini.rates.output, mini.rates.cache_read) == (0.15, 0.6, 0.075)


def test_candidate_names_go_from_specific_to_generic() -> None:
    names = list(candidate_names("openrouter/anthropic/claude-3-5-haiku-20241022:beta"))
    assert names[0] == "openrouter/anthropic/claude-3-5-haiku-20241022:beta"
    assert "claude-3-5-haiku-20241022" in names
    assert names[-1] == "claude-3-5-haiku"


def test_with_overrides_merges_and_adds(book: PriceBook) -> None:
    custom = book.with_overrides({"gpt-4o": {"input": 2.0}, "inhouse-7b": {"input": 0.01,
                                  "output": 0.02, "provider": "self"}})  # fmt: skip
    gpt = custom.lookup("openai/gpt-4o-2024-11-20", None)
    assert gpt is not None and (gpt.rates.input, gpt.rates.output) == (2.0, 10.0)
    added = custom.lookup("inhouse-7b", None)
    assert added is not None and added.rates.cache_read == 0.01  # defaults to input
    original = book.lookup("gpt-4o", None)
    assert original is not None and original.rates.input == 2.5  # the shipped book is unchanged


def test_invalid_book_names_the_bad_field(tmp_path: Path) -> None:
    bad = {"version": "1", "compiled_at": "2026-01-01", "models": [{"id": "m", "input": -1}]}
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"models\[0\]\.input"):
        load_price_book(path)
    with pytest.raises(ValueError, match="unknown key 'inptu'"):
        parse_price_book({"version": "1", "compiled_at": "x", "models": [
            {"id": "m", "input": 1, "output": 1, "inptu": 2}]})  # fmt: skip
