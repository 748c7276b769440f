"""Where the operator's price book comes from (`prices:` in the config), refreshed on a schedule.

Reads the operator's book file (`prices.path`, else `<data dir>/prices.json`, which `agentledger
prices update` writes), merges a fetched OpenRouter/LiteLLM price list over it, keeps the last
good result in the data dir, and hands each new book to the service, which swaps it into the
cost processor, /v1/track and decode workers (stacked over the shipped corrections and
genai-prices by `layers.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.configparse import ConfigIssue, bounds
from collector.prices import importers as priceimport
from collector.prices.book import PriceBook, parse_price_book
from collector.telemetry import Metrics

log = logging.getLogger(__name__)

STATE_FILE = "price_book.json"
OPERATOR_FILE = "prices.json"  # the operator's book in the data dir when `prices.path` is null
EMPTY_BOOK = '{"version": "none", "compiled_at": "1970-01-01", "models": []}\n'
FETCH_LIMIT = 50 * 1024 * 1024
_CHECK_S = 60.0  # how often the book file is looked at for a change (a hash of ~40 KB)


@dataclass(frozen=True, kw_only=True)
class PricesConfig:
    """`path`: the operator's price book (null: `<data dir>/prices.json`, if there is one), over
    the shipped corrections and genai-prices. `url`: an OpenRouter `/api/v1/models` or LiteLLM
    price list merged over it every `refresh_interval_s` (a failed fetch is retried after
    `retry_interval_s`; the last good book stays in use meanwhile)."""

    path: str | None = None
    url: str | None = None
    refresh_interval_s: int = field(default=86_400, metadata=bounds(ge=1))
    retry_interval_s: int = field(default=300, metadata=bounds(ge=1))
    timeout_s: int = field(default=30, metadata=bounds(ge=1, le=600))

    def validate(self) -> list[ConfigIssue]:
        issues = []
        if self.path == "":
            issues.append(ConfigIssue("path", "must not be empty (null: the data directory's)"))
        if self.url is not None and not self.url.startswith(("http://", "https://", "file://")):
            issues.append(ConfigIssue("url", "must be an http://, https:// or file:// URL"))
        return issues


@dataclass(frozen=True)
class BookSource:
    """Which operator book is current, read from files only: picklable, so every decode worker
    process loads the same book the service does. `path` is the configured book (must exist),
    `default` the data directory's (may be absent: no operator book); `state` is where the
    last good fetched book of `url` is kept (None without a URL)."""

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
        return kept if kept is not None else _parse_text(text, str(self.base_path))

    def kept(self, base_text: str) -> PriceBook | None:
        state = read_state(self.state)
        if state is None or state.get("url") != self.url or state.get("base") != _sha(base_text):
            return None
        try:
            return parse_price_book(state.get("book"), f"{self.state}: book")
        except ValueError as exc:
            log.warning("ignoring the kept price book: %s", exc)
            return None


def book_source(prices: PricesConfig, data_dir: str) -> BookSource:
    state = str(Path(data_dir, STATE_FILE)) if prices.url else None
    return BookSource(prices.path, prices.url, state, str(Path(data_dir, OPERATOR_FILE)))


def read_state(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cannot read the kept price book %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def fetch(source: str, timeout: float = 30.0, limit: int = FETCH_LIMIT) -> bytes:
    """The body at an http(s)/file URL or a plain path, at most `limit` bytes; OSError (an
    HTTP error status too) or ValueError when it cannot be had."""
    if "://" not in source:
        source = Path(source).resolve().as_uri()
    if not source.startswith(("http://", "https://", "file://")):
        raise ValueError(f"{redact_url(source)}: only http, https and file URLs are supported")
    with urllib.request.urlopen(source, timeout=timeout) as response:
        body: bytes = response.read(limit + 1)
    if len(body) > limit:
        raise ValueError(f"{redact_url(source)}: larger than {limit // (1024 * 1024)} MiB")
    return body


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` (fsynced first): readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def redact_url(url: str) -> str:
    """scheme://host/path: no credentials or query (an API key may ride in either)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class PriceFeed:
    """Keeps the current book: re-reads the book file when it changes and, with a URL, fetches
    and merges on schedule. `on_change(book)` is called with every new book, after the book is
    durable in `source.state`, so worker processes that load it from there get the same one."""

    def __init__(
        self,
        config: PricesConfig,
        source: BookSource,
        on_change: Callable[[PriceBook], None],
        metrics: Metrics,
        *,
        fetcher: Callable[[str, float], bytes] = fetch,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._source = source
        self._on_change = on_change
        self._metrics = metrics
        self._fetch = fetcher
        self._clock = clock
        base = source.base_text()
        self._base_sha = _sha(base)
        kept = source.kept(base)
        self.book = kept if kept is not None else _parse_text(base, str(source.base_path))
        self.origin = "fetched" if kept is not None else "file"
        state = read_state(source.state) if kept is not None else None
        self.last_success = float(state.get("fetched_at_unix", 0)) if state else 0.0
        self._models = state["book"]["models"] if state else None
        # A fresh kept book is not fetched again at start: restarts do not hammer the source.
        self._next_fetch = self.last_success + config.refresh_interval_s if kept else 0.0
        self._describe()

    def _describe(self) -> None:
        m = self._metrics
        m.describe("agentledger_price_book_refreshes_total", "counter", "price list fetches")
        m.gauge(
            "agentledger_price_book_last_success_timestamp_seconds",
            "when the price list was last fetched and merged (0: never)",
            lambda: self.last_success,
        )
        m.collector(
            lambda: [
                "# HELP agentledger_price_book_info the price book in use",
                "# TYPE agentledger_price_book_info gauge",
                f'agentledger_price_book_info{{version="{_label(self.book.version)}",'
                f'origin="{self.origin}"}} 1',
            ]
        )

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
            self._base_sha, self._next_fetch, self._models = _sha(base), 0.0, None
            self._swap(book, "file")
            result = "reloaded"
        if self._config.url and self._clock() >= self._next_fetch:
            result = self._refresh(base)
        return result

    def _refresh(self, base: str) -> str:
        url = self._config.url
        assert url is not None and self._source.state is not None
        now = self._clock()
        try:
            converted = priceimport.convert(json.loads(self._fetch(url, self._config.timeout_s)))
            if not converted.entries:
                raise ValueError("the price list has no model the book can price")
            today = datetime.fromtimestamp(now, UTC).date()
            merged = priceimport.merge(json.loads(base), converted.entries, today).book
            if merged["models"] == self._models:
                result = "unchanged"
            else:
                state = {"url": url, "base": _sha(base), "fetched_at_unix": now, "book": merged}
                kept = Path(self._source.state)
                kept.parent.mkdir(parents=True, exist_ok=True)  # e.g. a catalog kept elsewhere
                write_atomically(kept, json.dumps(state))
                book = parse_price_book(merged, "merged book")
                self._models = merged["models"]
                self._swap(book, "fetched")
                result = "updated"
        except (OSError, ValueError) as exc:  # URLError/HTTPError are OSErrors
            self._metrics.inc("agentledger_price_book_refreshes_total", result="failed")
            self._next_fetch = now + min(
                self._config.retry_interval_s, self._config.refresh_interval_s
            )
            log.warning(
                "price list fetch from %s failed (%s); keeping price book %s",
                redact_url(url), exc, self.book.version,
            )  # fmt: skip
            return "failed"
        self.last_success = now
        self._next_fetch = now + self._config.refresh_interval_s
        self._metrics.inc("agentledger_price_book_refreshes_total", result=result)
        if result == "updated":
            log.info("price book %s from %s in use", self.book.version, redact_url(url))
        return result

    def _swap(self, book: PriceBook, origin: str) -> None:
        self._on_change(book)
        self.book, self.origin = book, origin

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set; a callback that raises is logged, never fatal."""
        every = min(_CHECK_S, self._config.refresh_interval_s, self._config.retry_interval_s)
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                log.exception("price book refresh failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)


def _parse_text(text: str, where: str) -> PriceBook:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: cannot read price book: {exc}") from exc
    return parse_price_book(data, where)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
