"""How the web UI writes numbers, money, durations and times: the templates' Jinja filters.

Values come from the query layer's records; an unknown cost stays unknown ("unpriced"), never $0.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def usd(value: float | None) -> str:
    """Dollars with enough places to tell small amounts apart: $12.34, $0.0123, $0.000123."""
    if value is None:
        return "—"
    v = float(value)
    if v == 0:
        return "$0"
    if abs(v) < 0.0000005:
        return "<$0.000001"  # priced, but below the smallest amount shown: not free
    if abs(v) >= 1:
        return f"{'-' if v < 0 else ''}${abs(v):,.2f}"
    # Below a dollar: up to six places (the read API's precision), without trailing zeros.
    text = f"{abs(v):.6f}".rstrip("0")
    text = text + "0" if text.endswith(".") or len(text.split(".")[1]) < 2 else text
    return f"{'-' if v < 0 else ''}${text}"


def call_cost(cost: float | None, source: str | None) -> str:
    """An LLM call's cost: a call without a price (source "none", or no cost) is "unpriced"."""
    if cost is None or source == "none":
        return "unpriced"
    return usd(cost)


def run_cost(cost: float | None, unknown_calls: int | None) -> str:
    """A run's cost: the priced calls' sum, and how many calls had no price."""
    unknown = int(unknown_calls or 0)
    if not unknown:
        return usd(cost or 0.0)
    note = f"{unknown} call{'s' if unknown != 1 else ''} unpriced"
    return f"{usd(cost)} + {note}" if cost else note


def number(value: float | int | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def duration(ms: float | int | None) -> str:
    if ms is None:
        return "—"
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    return f"{minutes // 60} h {minutes % 60} min"


def when(value: int | datetime | str | None) -> str:
    """Microseconds since the epoch (or a datetime, or RFC 3339) as "2025-01-06 12:00:03 UTC"."""
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    elif isinstance(value, datetime):
        t = value
    else:
        t = _EPOCH + timedelta(microseconds=int(value))
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{100 * float(rate):.1f}%"


def change(now: float, before: float) -> str:
    """Relative change against the previous window: "+25%", "-10%", or "new" when there was
    nothing before (the read API's null)."""
    if not before:
        return "new" if now else "—"
    rel = (now - before) / before * 100
    if abs(rel) < 0.05:
        return "±0%"
    return f"{'+' if rel > 0 else '-'}{abs(rel):.1f}%"


def excerpt(text: Any, chars: int = 2000) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= chars else s[:chars] + "…"


FILTERS = {
    "usd": usd,
    "call_cost": call_cost,
    "run_cost": run_cost,
    "number": number,
    "duration": duration,
    "when": when,
    "percent": percent,
    "excerpt": excerpt,
}
