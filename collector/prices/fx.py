"""Reference FX rates: what a USD cost is in an org's currency, with the rate's date and source.

The shipped, dated table `config/fx_rates.json` (ECB euro reference rates of one day), or the
last good table fetched from `prices.fx.url` (an ECB `eurofxref-daily.xml`, or a table shaped
like the shipped one) on a schedule and kept in the data dir; an org's own `fx_rates` setting
wins over either. `collector/roi/` converts /v1/track and traced-run costs with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from collector.configparse import ConfigIssue, bounds
from collector.prices.fetch import Schedule, fetch, keep, label, read_state, tick_forever
from collector.resources import PACKAGE, shipped_text
from collector.telemetry import Metrics

log = logging.getLogger(__name__)

SHIPPED_FILE = "fx_rates.json"  # the reference table, in the shipped data package
STATE_FILE = "fx_rates.json"  # the last good fetched table, in the data dir
_CODE = re.compile(r"^[A-Z]{3}$")
_ECB_DAY = re.compile(r"""<Cube\s+time=['"](\d{4}-\d{2}-\d{2})['"]""")
_ECB_RATE = re.compile(r"""<Cube\s+currency=['"]([A-Z]{3})['"]\s+rate=['"]([0-9.]+)['"]""")
ECB_SOURCE = "European Central Bank euro foreign exchange reference rates"


@dataclass(frozen=True, kw_only=True)
class FxConfig:
    """`url`: where fresh reference rates are fetched, every `refresh_interval_s` (after a
    failure, `retry_interval_s`): an ECB `eurofxref-daily.xml` or a JSON table shaped like
    `config/fx_rates.json`. null: the shipped table only."""

    url: str | None = None
    refresh_interval_s: int = field(default=86_400, metadata=bounds(ge=1))
    retry_interval_s: int = field(default=300, metadata=bounds(ge=1))
    timeout_s: int = field(default=30, metadata=bounds(ge=1, le=600))

    def validate(self) -> list[ConfigIssue]:
        if self.url is not None and not self.url.startswith(("http://", "https://", "file://")):
            return [ConfigIssue("url", "must be an http://, https:// or file:// URL")]
        return []


@dataclass(frozen=True)
class Fx:
    """Units of a currency per USD, the day the rate is of (None: the org's own setting) and
    where it came from (`org` or the table's source)."""

    rate: float
    date: str | None
    source: str


@dataclass(frozen=True)
class FxTable:
    """Reference rates against one base currency (units per 1 base), of one day."""

    base: str
    date: str
    source: str
    rates: dict[str, float]

    def usd_to(self, currency: str) -> Fx | None:
        """Units of `currency` per USD, crossed through the base; None when unknown."""
        per_base = dict(self.rates)
        per_base[self.base] = 1.0
        usd, other = per_base.get("USD"), per_base.get(currency)
        if not usd or not other:
            return None
        return Fx(other / usd, self.date, self.source)


def parse_table(data: Any, where: str = "fx_rates") -> FxTable:
    """A table shaped like `config/fx_rates.json`; ValueError naming what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object")
    rates = data.get("rates")
    if not isinstance(rates, dict) or not rates:
        raise ValueError(f"{where}.rates: expected an object of currency -> rate")
    for code, rate in rates.items():
        if (
            not _CODE.match(str(code))
            or isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or rate <= 0
        ):
            raise ValueError(f"{where}.rates.{code}: expected a 3-letter code and a rate > 0")
    for key in ("base", "date", "source"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValueError(f"{where}.{key}: expected a non-empty string")
    try:
        date.fromisoformat(data["date"])
    except ValueError:
        raise ValueError(f"{where}.date: expected a date YYYY-MM-DD") from None
    table = FxTable(
        data["base"], data["date"], data["source"], {k: float(v) for k, v in rates.items()}
    )
    if table.base != "USD" and "USD" not in table.rates:
        raise ValueError(f"{where}.rates: no USD rate, so no cost can be converted with it")
    return table


def parse_ecb_xml(text: str) -> FxTable:
    """An ECB `eurofxref-daily.xml` (EUR base; of a file with several days, such as
    `eurofxref-hist.xml`, the first, newest, day); ValueError when it is not one."""
    days = list(_ECB_DAY.finditer(text))
    block = text[days[0].end() : days[1].start()] if len(days) > 1 else text
    rates = {code: float(rate) for code, rate in _ECB_RATE.findall(block)}
    if not days or "USD" not in rates or any(r <= 0 for r in rates.values()):
        raise ValueError("not an ECB reference rates file (no day, no USD rate or a rate of 0)")
    return FxTable("EUR", days[0].group(1), ECB_SOURCE, rates)


def parse(text: str, where: str) -> FxTable:
    """An ECB XML file or a JSON table, told apart by their first character."""
    if text.lstrip().startswith("<"):
        return parse_ecb_xml(text)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: neither ECB XML nor JSON: {exc}") from None
    return parse_table(data, where)


def load_table(path: Path | None = None) -> FxTable:
    """`path`, else the shipped table."""
    if path is None:
        return parse(shipped_text(SHIPPED_FILE), f"{PACKAGE}/{SHIPPED_FILE}")
    return parse(path.read_text(encoding="utf-8"), str(path))


def shipped_only() -> Callable[[], FxTable]:
    """A source of the shipped table alone, for converters run without a feed."""
    table = load_table()
    return lambda: table


def usd_to(currency: str, org_rates: dict[str, float], table: FxTable) -> Fx | None:
    """Units of `currency` per USD: 1 for USD, the org's own rate, else the reference table's;
    None only when the currency is unknown to both."""
    if currency == "USD":
        return Fx(1.0, None, "identity")
    own = org_rates.get(currency)
    if own is not None:
        return Fx(own, None, "org")
    return table.usd_to(currency)


class FxFeed:
    """The reference table in use: the last good one fetched from `config.url` (kept in
    `state`, so a restart without network keeps it), else the shipped one; with a URL,
    fetched again on schedule. `current()` is what converters call for each cost."""

    def __init__(
        self,
        config: FxConfig,
        state: Path,
        metrics: Metrics,
        *,
        shipped: FxTable | None = None,
        fetcher: Callable[[str, float], bytes] = fetch,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._state = state
        self._fetch = fetcher
        self._clock = clock
        self._schedule = Schedule(
            config.url,
            config.refresh_interval_s,
            config.retry_interval_s,
            metrics,
            "agentledger_fx_rates",
            "FX rates",
        )
        self.table = shipped or load_table()
        self.origin = "shipped"
        kept = read_state(state) if config.url else None
        if kept is not None and kept.get("url") == config.url:
            try:
                self.table = parse_table(kept.get("table"), f"{state}: table")
            except ValueError as exc:
                log.warning("ignoring the kept FX rates: %s", exc)
            else:
                self.origin = "fetched"
                self._schedule.kept(float(kept.get("fetched_at_unix") or 0))
        metrics.collector(
            lambda: [
                "# HELP agentledger_fx_rates_info the reference FX rates in use",
                "# TYPE agentledger_fx_rates_info gauge",
                f'agentledger_fx_rates_info{{date="{label(self.table.date)}",'
                f'source="{label(self.table.source)}",origin="{self.origin}"}} 1',
            ]
        )

    def current(self) -> FxTable:
        return self.table

    def tick(self) -> str | None:
        """Fetch when due (blocking): "updated", "unchanged", "failed", or None."""
        now = self._clock()
        if not self._schedule.due(now):
            return None
        keeping = f"the FX rates of {self.table.date}"
        return self._schedule.attempt(now, lambda: self._refresh(now), keeping)

    def _refresh(self, now: float) -> str:
        assert self._config.url is not None
        body = self._fetch(self._config.url, self._config.timeout_s)
        table = parse(body.decode("utf-8", "replace"), "the fetched FX rates")
        if table == self.table and self.origin == "fetched":
            return "unchanged"
        keep(self._state, {"url": self._config.url, "fetched_at_unix": now, "table": asdict(table)})
        self.table, self.origin = table, "fetched"
        log.info("FX rates of %s (%s) in use", table.date, table.source)
        return "updated"

    async def run_forever(self, stop: asyncio.Event) -> None:
        await tick_forever(self.tick, self._schedule.every, stop)
