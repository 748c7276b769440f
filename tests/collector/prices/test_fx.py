"""Reference FX rates: the shipped ECB table, ECB XML and JSON tables, the org's own rate first,
and the feed that fetches fresh rates from a configured URL, keeps the last good table in the
data dir (used after a restart) and keeps it through failures.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from collector.config import parse_config
from collector.configparse import ConfigError
from collector.prices.fx import (
    STATE_FILE,
    FxConfig,
    FxFeed,
    load_table,
    parse,
    parse_ecb_xml,
    parse_table,
    usd_to,
)
from collector.telemetry import Metrics
from tests.promtext import metric


def ecb_xml(day: str, usd: str, gbp: str, older: str = "") -> str:
    """An ECB reference rates file of `day` (then, as in eurofxref-hist.xml, older days)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" '
        'xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">\n'
        "<gesmes:subject>Reference rates</gesmes:subject>\n<Cube>\n"
        f"<Cube time='{day}'>\n<Cube currency='USD' rate='{usd}'/>\n"
        f"<Cube currency='JPY' rate='171.94'/>\n<Cube currency='GBP' rate='{gbp}'/>\n</Cube>\n"
        f"{older}</Cube>\n</gesmes:Envelope>\n"
    )


def test_the_shipped_table_is_the_ecbs_of_a_recorded_day() -> None:
    table = load_table()
    assert (table.base, table.date) == ("EUR", "2024-06-28")
    assert table.source.startswith("European Central Bank")
    gbp = table.usd_to("GBP")
    assert gbp is not None and gbp.rate == pytest.approx(0.84638 / 1.0705)
    eur = table.usd_to("EUR")
    assert eur is not None and eur.rate == pytest.approx(1 / 1.0705) and eur.date == "2024-06-28"
    assert table.usd_to("XTS") is None


def test_ecb_xml_daily_and_history_files() -> None:
    daily = parse_ecb_xml(ecb_xml("2026-11-30", "1.05", "0.83"))
    assert (daily.base, daily.date, daily.rates["GBP"]) == ("EUR", "2026-11-30", 0.83)
    older = "<Cube time='2026-11-27'><Cube currency='USD' rate='9.99'/></Cube>\n"
    hist = parse(ecb_xml("2026-11-30", "1.05", "0.83", older), "hist")
    assert (hist.date, hist.rates["USD"]) == ("2026-11-30", 1.05)  # the newest day's rates
    with pytest.raises(ValueError, match="not an ECB"):
        parse_ecb_xml("<html>maintenance</html>")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"base": "EUR", "date": "2026-11-30", "source": "x", "rates": {"GBP": 0.8}}, "no USD"),
        ({"base": "EUR", "date": "30/11/2026", "source": "x", "rates": {"USD": 1.1}}, "date"),
        ({"base": "EUR", "date": "2026-11-30", "source": "x", "rates": {"USD": 0}}, "rate > 0"),
        ({"base": "EUR", "date": "2026-11-30", "rates": {"USD": 1.1}}, "source"),
        ([], "expected an object"),
    ],
)
def test_a_bad_table_is_refused(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_table(data)


def test_usd_then_the_orgs_own_rate_then_the_reference_table() -> None:
    table = load_table()
    usd = usd_to("USD", {"USD": 2.0}, table)
    assert usd is not None and (usd.rate, usd.source) == (1.0, "identity")
    own = usd_to("EUR", {"EUR": 0.9}, table)
    assert own is not None and (own.rate, own.date, own.source) == (0.9, None, "org")
    reference = usd_to("GBP", {"EUR": 0.9}, table)
    assert reference is not None and reference.date == "2024-06-28"
    assert usd_to("XTS", {}, table) is None  # truly unknown: the caller says `none`


def make_feed(tmp_path: Path, url: str | None, clock: list[float]) -> tuple[FxFeed, Metrics, Path]:
    state = tmp_path / "data" / STATE_FILE
    config = FxConfig(url=url, refresh_interval_s=3600, retry_interval_s=60)
    metrics = Metrics()
    return FxFeed(config, state, metrics, clock=lambda: clock[0]), metrics, state


def test_fresh_rates_are_fetched_kept_and_used_after_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "eurofxref-daily.xml"
    source.write_text(ecb_xml("2026-11-30", "1.05", "0.84"))
    clock = [1_800_000_000.0]
    feed, metrics, state = make_feed(tmp_path, source.as_uri(), clock)
    assert feed.current().date == "2024-06-28" and feed.origin == "shipped"

    assert feed.tick() == "updated"
    eur = usd_to("EUR", {}, feed.current())
    assert eur is not None and (eur.rate, eur.date) == (pytest.approx(1 / 1.05), "2026-11-30")
    assert json.loads(state.read_text())["table"]["date"] == "2026-11-30"
    assert metric(metrics.render(), "agentledger_fx_rates_info", date="2026-11-30") == 1
    assert feed.tick() is None  # not due for an hour
    clock[0] += 3600
    assert feed.tick() == "unchanged"

    source.write_text("<html>maintenance</html>")
    clock[0] += 3600
    with caplog.at_level(logging.WARNING):
        assert feed.tick() == "failed"
    assert (
        feed.current().date == "2026-11-30" and "keeping the FX rates of 2026-11-30" in caplog.text
    )
    assert metrics.value("agentledger_fx_rates_refreshes_total", result="failed") == 1
    clock[0] += 59
    assert feed.tick() is None  # retried after retry_interval_s, not refresh_interval_s
    source.write_text(ecb_xml("2026-12-01", "1.06", "0.85"))
    clock[0] += 1
    assert feed.tick() == "updated" and feed.current().date == "2026-12-01"

    source.unlink()  # the network is gone when the server starts again
    clock[0] += 60
    again, _, _ = make_feed(tmp_path, source.as_uri(), clock)
    assert again.origin == "fetched" and again.current().date == "2026-12-01"
    assert again.tick() is None  # fetched a minute ago: not due, no fetch at start

    other, _, _ = make_feed(tmp_path, source.as_uri() + "?v=2", clock)
    assert other.current().date == "2024-06-28"  # another URL's table is not this one's
    off, _, _ = make_feed(tmp_path, None, clock)
    assert off.current().date == "2024-06-28" and off.tick() is None


def test_a_json_table_url_and_the_config(tmp_path: Path) -> None:
    table = {"base": "USD", "date": "2026-12-02", "source": "treasury", "rates": {"GBP": 0.8}}
    source = tmp_path / "rates.json"
    source.write_text(json.dumps(table))
    feed, _, _ = make_feed(tmp_path, source.as_uri(), [0.0])
    assert feed.tick() == "updated"
    gbp = usd_to("GBP", {}, feed.current())
    assert gbp is not None and (gbp.rate, gbp.date, gbp.source) == (0.8, "2026-12-02", "treasury")

    config = parse_config({"prices": {"fx": {"url": source.as_uri()}}}, {})
    assert config.prices.fx == FxConfig(url=source.as_uri())
    with pytest.raises(ConfigError) as bad:
        parse_config({"prices": {"fx": {"url": "ftp://x", "refresh_interval_s": 0}}}, {})
    assert sorted(i.path for i in bad.value.issues) == [
        "prices.fx.refresh_interval_s",
        "prices.fx.url",
    ]
