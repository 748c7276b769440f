"""JSON shapes of the read API (the Trakr dashboard API doc): money as decimal strings, times as
RFC 3339 UTC with a Z. Turns the query layer's records into the documented objects; the
`AlertEvent` is here because the read API lists events and the alerts API answers one it
resolved, and neither package imports the other.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO_USD = Decimal("0.000001")


def usd(value: float | None) -> str:
    """Dollars as a decimal string with six places ("0.001234"): exact to the micro-dollar,
    the same scale for every amount, and no float artefacts like 0.30000000000000004."""
    amount = Decimal(repr(float(value or 0.0))).quantize(_MICRO_USD, ROUND_HALF_EVEN)
    return f"{amount + 0:f}" if amount else "0.000000"  # never "-0.000000"


def rfc3339(us: int | None) -> str | None:
    """Microseconds since the epoch as e.g. "2025-01-31T09:30:00.123Z" (milliseconds, as
    JavaScript's Date.toISOString writes them)."""
    if us is None:
        return None
    t = _EPOCH + timedelta(microseconds=us)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{t.microsecond // 1000:03d}Z"


def iso(t: datetime) -> str:
    return rfc3339((t - _EPOCH) // timedelta(microseconds=1)) or ""


def ms(ns_start: int, ns_end: int | None) -> float | None:
    return None if ns_end is None else round((ns_end - ns_start) / 1e6, 3)


def number(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


# The columns of `alert_events` an AlertEvent is made of, in the order `alert_event` reads them.
ALERT_EVENT_COLUMNS = """event_id, rule_id, rule_name, run_id, workflow_name, triggered_value,
    threshold_value, notification_sent, epoch_us(resolved_at), epoch_us(created_at)"""


def alert_event(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row of `ALERT_EVENT_COLUMNS` as the documented AlertEvent."""
    return {
        "id": row[0],
        "alert_rule_id": row[1],
        "alert_rule_name": row[2],
        "run_id": row[3],
        "workflow_name": row[4],
        "triggered_value": float(row[5]),
        "threshold_value": float(row[6]),
        "notification_sent": bool(row[7]),
        "resolved_at": rfc3339(row[8]),
        "created_at": rfc3339(row[9]),
    }
