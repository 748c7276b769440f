"""Reference FX rates: what a USD cost is in an org's currency, with the rate's date and source.

Read from the shipped, dated table `config/fx_rates.json` (ECB euro reference rates, a day's
file) or an ECB `eurofxref-daily.xml`; an org's own `fx_rates` setting wins over it. Used by
`collector/roi/compute.py` for /v1/track and traced-run costs.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.prices.book import shipped_file

_CODE = re.compile(r"^[A-Z]{3}$")
_ECB_DAY = re.compile(r"""<Cube\s+time=['"](\d{4}-\d{2}-\d{2})['"]""")
_ECB_RATE = re.compile(r"""<Cube\s+currency=['"]([A-Z]{3})['"]\s+rate=['"]([0-9.]+)['"]""")


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
    return FxTable(
        data["base"], data["date"], data["source"], {k: float(v) for k, v in rates.items()}
    )


def parse_ecb_xml(text: str) -> FxTable:
    """An ECB `eurofxref-daily.xml` (EUR base); ValueError when it is not one."""
    day = _ECB_DAY.search(text)
    rates = {code: float(rate) for code, rate in _ECB_RATE.findall(text)}
    if day is None or "USD" not in rates:
        raise ValueError("not an ECB reference rates file (no day or no USD rate)")
    return FxTable("EUR", day.group(1), "European Central Bank euro reference rates", rates)


def load_table(path: Path | None = None) -> FxTable:
    path = path or shipped_file("fx_rates.json")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("<"):
        return parse_ecb_xml(text)
    return parse_table(json.loads(text), str(path))


@functools.cache
def reference() -> FxTable:
    """The shipped table, read once per process (it changes only with an upgrade)."""
    return load_table()


def usd_to(currency: str, org_rates: dict[str, float], table: FxTable | None = None) -> Fx | None:
    """Units of `currency` per USD: 1 for USD, the org's own rate, else the reference table's;
    None only when the currency is unknown to both."""
    if currency == "USD":
        return Fx(1.0, None, "identity")
    own = org_rates.get(currency)
    if own is not None:
        return Fx(own, None, "org")
    return (table or reference()).usd_to(currency)
