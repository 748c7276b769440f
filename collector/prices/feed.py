"""Where the prices beneath config overrides come from (`prices:` in the config), kept current.

Reads the operator's book file (`prices.path`, else `<data dir>/prices.json`, which `agentledger
prices update` writes); with `prices.url`, fetches on a schedule either a price list
(OpenRouter/LiteLLM), merged over that book, or a genai-prices data file, which replaces the
bundled genai-prices data. The last good result is kept in the data dir, so every decode worker
and a restarted server load the same prices (`BookSource.pricing`, stacked by `layers.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.configparse import ConfigIssue, bounds
from collector.prices import importers as priceimport
from collector.prices.book import PriceBook, parse_price_book
from collector.prices.fetch import (
    Schedule,
    fetch,
    keep,
    label,
    read_state,
    tick_forever,
)
from collector.prices.fx import FxConfig
from collector.prices.genai import GenaiLayer, bundled_version, providers_from_json
from collector.prices.layers import stack
from collector.prices.pricing import PriceLookup
from collector.telemetry import Metrics

log = logging.getLogger(__name__)

STATE_FILE = "price_book.json"
OPERATOR_FILE = "prices.json"  # the operator's book in the data dir when `prices.path` is null
EMPTY_BOOK = '{"version": "none", "compiled_at": "1970-01-01", "models": []}\n'


@dataclass(frozen=True, kw_only=True)
class PricesConfig:
    """`path`: the operator's price book (null: `<data dir>/prices.json`, if there is one), over
    the shipped corrections and genai-prices. `url`: fetched every `refresh_interval_s`, either
    an OpenRouter `/api/v1/models` or LiteLLM price list, merged over that book, or a
    genai-prices `data.json`, used instead of the bundled genai-prices data (a failed fetch is
    retried after `retry_interval_s`; the last good prices stay in use meanwhile). `fx`: the
    reference FX rates (`fx.py`)."""

    path: str | None = None
    url: str | None = None
    refresh_interval_s: int = field(default=86_400, metadata=bounds(ge=1))
    retry_interval_s: int = field(default=300, metadata=bounds(ge=1))
    timeout_s: int = field(default=30, metadata=bounds(ge=1, le=600))
    fx: FxConfig = field(default_factory=FxConfig)

    def validate(self) -> list[ConfigIssue]:
        issues = []
        if self.path == "":
            issues.append(ConfigIssue("path", "must not be empty (null: the data directory's)"))
        if self.url is not None and not self.url.startswith(("http://", "https://", "file://")):
            issues.append(ConfigIssue("url", "must be an http://, https:// or file:// URL"))
        return issues


@dataclass(frozen=True)
class Kept:
    """What a fetch from `prices.url` left in the data dir: a merged `book`, or a genai-prices
    data file's `genai` layer; `fetched_at` (unix seconds) and the state's `raw` content."""

    fetched_at: float
    book: PriceBook | None = None
    genai: GenaiLayer | None = None
    raw: Any = None


@dataclass(frozen=True)
class BookSource:
    """Which prices are current, read from files only: picklable, so every decode worker
    process loads the same prices the service does. `path` is the configured book (must exist),
    `default` the data directory's (may be absent: no operator book); `state` is where the
    last good fetch of `url` is kept (None without a URL)."""

    path: str | None = None
    url: str | None = None
    state: str | None = None
    default: str | None = None

    @property
    def base_path(self) -> Path:
        return Path(self.path or self.default or OPERATOR_FILE)

    def base_text(self) -> str:
        if not self.path and not self.base_path.is_file():
            return EMPTY_BOOK
        try:
            return self.base_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{self.base_path}: cannot read price book: {exc}") from exc

    def load_base(self) -> PriceBook:
        return _parse_text(self.base_text(), str(self.base_path))

    def load(self) -> PriceBook:
        """The last good fetched book, if one was merged over this very base from this URL;
        else the base book."""
        text = self.base_text()
        kept = self.kept(text)
        book = kept.book if kept is not None else None
        return book or _parse_text(text, str(self.base_path))

    def pricing(self) -> PriceLookup:
        """The stack every LLM call is priced with: the operator's book (with a fetched price
        list merged in) over the shipped corrections over genai-prices (a fetched data file's,
        else the bundled)."""
        text = self.base_text()
        kept = self.kept(text)
        book = kept.book if kept is not None else None
        genai = kept.genai if kept is not None else None
        return stack(book or _parse_text(text, str(self.base_path)), genai=genai)

    def kept(self, base_text: str) -> Kept | None:
        """The kept result of fetching this URL: a genai-prices data file, or a price list
        merged over this very base book; None when there is none or it is another's."""
        state = read_state(self.state)
        if state is None or state.get("url") != self.url:
            return None
        fetched_at = float(state.get("fetched_at_unix") or 0)
        try:
            if "genai" in state:
                layer = GenaiLayer(providers_from_json(state["genai"]), genai_version(fetched_at))
                return Kept(fetched_at, genai=layer, raw=state["genai"])
            if state.get("base") != _sha(base_text):
                return None
            book = parse_price_book(state.get("book"), f"{self.state}: book")
            return Kept(fetched_at, book=book, raw=state["book"]["models"])
        except ValueError as exc:
            log.warning("ignoring the kept prices %s: %s", self.state, exc)
            return None


def genai_version(fetched_at: float) -> str:
    """The version a fetched genai-prices data file is recorded under (the day it was fetched)."""
    return f"genai-prices data of {datetime.fromtimestamp(fetched_at, UTC):%Y-%m-%d}"


def book_source(prices: PricesConfig, data_dir: str) -> BookSource:
    state = str(Path(data_dir, STATE_FILE)) if prices.url else None
    return BookSource(prices.path, prices.url, state, str(Path(data_dir, OPERATOR_FILE)))


class PriceFeed:
    """Keeps the current prices: re-reads the book file when it changes and, with a URL,
    fetches on schedule. `on_change()` is called after every change, once the new prices are
    durable in the files `BookSource.pricing` reads, so whoever rebuilds from them (the
    service's /v1/track pricing, each decode worker) gets the same ones."""

    def __init__(
        self,
        config: PricesConfig,
        source: BookSource,
        on_change: Callable[[], None],
        metrics: Metrics,
        *,
        fetcher: Callable[[str, float], bytes] = fetch,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._source = source
        self._on_change = on_change
        self._fetch = fetcher
        self._clock = clock
        self._schedule = Schedule(
            config.url,
            config.refresh_interval_s,
            config.retry_interval_s,
            metrics,
            "agentledger_price_book",
            "price list",
        )
        base = source.base_text()
        self._base_sha = _sha(base)
        kept = source.kept(base)
        fetched_book = kept.book if kept is not None else None
        self.book = fetched_book or _parse_text(base, str(source.base_path))
        self.genai = kept.genai.version if kept is not None and kept.genai else bundled_version()
        self.origin = "fetched" if kept is not None else "file"
        # What the last fetch brought (models merged, or the genai data), to tell "unchanged".
        self._fetched = kept.raw if kept is not None else None
        self._kind = None if kept is None else "genai" if kept.genai else "list"
        if kept is not None:
            self._schedule.kept(kept.fetched_at)
        metrics.collector(
            lambda: [
                "# HELP agentledger_price_book_info the prices in use",
                "# TYPE agentledger_price_book_info gauge",
                f'agentledger_price_book_info{{version="{label(self.book.version)}",'
                f'origin="{self.origin}",genai="{label(self.genai)}"}} 1',
            ]
        )

    @property
    def last_success(self) -> float:
        return self._schedule.last_success

    def tick(self) -> str | None:
        """One check (blocking: file reads, maybe a fetch). Returns what happened:
        "reloaded", "updated", "unchanged", "failed", or None when nothing was due."""
        try:
            base = self._source.base_text()
        except ValueError as exc:
            log.warning(
                "price book file unreadable (%s); keeping version %s", exc, self.book.version
            )
            return "failed"
        result = None
        if _sha(base) != self._base_sha:
            try:
                book = _parse_text(base, str(self._source.base_path))
            except ValueError as exc:
                log.warning("price book file invalid (%s); keeping %s", exc, self.book.version)
                return "failed"
            self._base_sha = _sha(base)
            if self._kind == "genai":  # fetched genai-prices data stays under the new book
                self._swap(book, "fetched")
            else:  # a price list merged over the old book is stale: fetched over this one now
                self._schedule.next_at, self._fetched, self._kind = 0.0, None, None
                self._swap(book, "file")
            result = "reloaded"
        now = self._clock()
        if self._schedule.due(now):
            keeping = f"price book {self.book.version} and {self.genai}"
            result = self._schedule.attempt(now, lambda: self._refresh(base, now), keeping)
        return result

    def _refresh(self, base: str, now: float) -> str:
        url = self._config.url
        assert url is not None and self._source.state is not None
        raw = json.loads(self._fetch(url, self._config.timeout_s))
        if isinstance(raw, list):  # a genai-prices data file: providers and their models
            providers_from_json(raw)  # refused whole when invalid
            if raw == self._fetched:
                return "unchanged"
            state = {"url": url, "fetched_at_unix": now, "genai": raw}
            keep(Path(self._source.state), state)
            self._fetched, self._kind, self.genai = raw, "genai", genai_version(now)
            self._swap(_parse_text(base, str(self._source.base_path)), "fetched")
            log.info("genai-prices data from the configured URL in use (%s)", self.genai)
            return "updated"
        converted = priceimport.convert(raw)
        if not converted.entries:
            raise ValueError("the price list has no model the book can price")
        today = datetime.fromtimestamp(now, UTC).date()
        merged = priceimport.merge(json.loads(base), converted.entries, today).book
        if merged["models"] == self._fetched:
            return "unchanged"
        book = parse_price_book(merged, "merged book")
        state = {"url": url, "base": _sha(base), "fetched_at_unix": now, "book": merged}
        keep(Path(self._source.state), state)
        self._fetched, self._kind, self.genai = merged["models"], "list", bundled_version()
        self._swap(book, "fetched")
        log.info("price book %s from the configured URL in use", book.version)
        return "updated"

    def _swap(self, book: PriceBook, origin: str) -> None:
        self.book, self.origin = book, origin
        self._on_change()

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set; a callback that raises is logged, never fatal."""
        await tick_forever(self.tick, self._schedule.every, stop)


def _parse_text(text: str, where: str) -> PriceBook:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: cannot read price book: {exc}") from exc
    return parse_price_book(data, where)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
