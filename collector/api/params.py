"""Query parameters of every JSON API: their declarations (`Param`, checked by the endpoint
wrapper and published in the OpenAPI document) and their parsing (times, windows, numbers,
enums, intervals, cursors).

Each problem becomes one `{"field", "message"}` entry of a 422 `validation_error`, so a client
sees every bad parameter at once and a bad value never reaches the SQL (or becomes a 500).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from starlette.datastructures import QueryParams

from collector.api import schema as sc
from collector.errors import ApiError
from collector.store.query import Window

DEFAULT_WINDOW = timedelta(days=30)
_EPOCH_MS = re.compile(r"^-?\d{1,16}$")
_INTERVAL = re.compile(r"^(\d{1,6})(s|m|h|d|w)$")
_UNIT_US = {"s": 10**6, "m": 60 * 10**6, "h": 3600 * 10**6, "d": 86400 * 10**6}
_UNIT_US["w"] = 7 * _UNIT_US["d"]

# Default bucket widths by window length: about 24 to 300 buckets whatever the window.
_DEFAULT_INTERVALS = (
    (timedelta(hours=6), "5m"),
    (timedelta(days=2), "1h"),
    (timedelta(days=14), "6h"),
    (timedelta(days=120), "1d"),
)


@dataclass(frozen=True)
class Param:
    """A query (or header) parameter: checked against `schema` before the handler runs. An
    array schema takes the parameter repeated (`?status=a&status=b`) or, for an enum,
    comma-joined."""

    name: str
    schema: sc.Schema
    description: str = ""
    required: bool = False
    where: Literal["query", "header"] = "query"


TIME = sc.string(description="ISO 8601 date-time (no offset: UTC) or epoch milliseconds")
FROM = Param("from", TIME, "inclusive start; default 30 days before `to`")
TO = Param("to", TIME, "inclusive end; default now")
CURSOR = Param("cursor", sc.string(2000), "next_cursor of the previous page")
INTERVAL = Param(
    "interval",
    sc.string(16, pattern="^[0-9]{1,6}[smhdw]$"),
    "bucket width such as 15m, 1h, 1d; default from the window's length",
)


def limit(default: int = 50, maximum: int = 100) -> Param:
    return Param("limit", sc.integer(1, maximum, default=default), f"page size, at most {maximum}")


def strings(name: str, description: str = "", allowed: Sequence[str] | None = None) -> Param:
    """A repeatable filter (`?name=a&name=b`; enum values may be comma-joined)."""
    item = sc.enum(allowed) if allowed is not None else sc.string(1000)
    return Param(name, sc.array(item), description)


class Params:
    """The query string of one request, with the problems found while reading it."""

    def __init__(self, query: QueryParams, now: datetime) -> None:
        self.query = query
        self.now = now
        self.problems: list[dict[str, str]] = []
        self.checked = False

    def problem(self, field: str, message: str) -> None:
        # The wrapper's schema check and the handler's parsing may both find the same field.
        if not any(p["field"] == field for p in self.problems):
            self.problems.append({"field": field, "message": message})

    def raise_if_invalid(self) -> None:
        self.checked = True
        if self.problems:
            raise ApiError(422, "validation_error", "Invalid query parameters", self.problems)

    # -- scalars ---------------------------------------------------------------------------

    def time(self, name: str) -> datetime | None:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return None
        parsed = parse_time(raw)
        if parsed is None:
            self.problem(name, "must be an ISO 8601 date-time or epoch milliseconds")
        return parsed

    def until(self, name: str = "to") -> datetime | None:
        """An inclusive end: a time given to the millisecond (as the APIs print times) covers
        its whole millisecond, so a printed time given back selects the row it came from
        (times are stored to the microsecond)."""
        end = self.time(name)
        if end is not None and end.microsecond % 1000 == 0:
            end += timedelta(microseconds=999)
        return end

    def window(self) -> Window:
        """`from`/`to`, inclusive; defaults: the last 30 days up to now. A default never makes a
        given bound an error: `from` in the future without `to` ends the window at `from`."""
        start, end = self.time("from"), self.until("to")
        if end is None:
            end = self.now if start is None or start <= self.now else start
        start = start or end - DEFAULT_WINDOW
        if start > end:
            self.problem("from", "must not be after `to`")
        return Window(start, end)

    def number(self, name: str) -> float | None:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            self.problem(name, "must be a finite number")
            return None
        return value

    def limit(self, default: int = 50, maximum: int = 100) -> int:
        raw = self.query.get("limit")
        if raw is None or raw == "":
            return default
        if not re.fullmatch(r"\d{1,6}", raw) or not 1 <= int(raw) <= maximum:
            self.problem("limit", f"must be an integer from 1 to {maximum}")
            return default
        return int(raw)

    def choice(self, name: str, allowed: Sequence[str], default: str | None) -> str | None:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        if raw not in allowed:
            self.problem(name, f"must be one of {', '.join(allowed)}")
            return default
        return raw

    def boolean(self, name: str) -> bool | None:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return None
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        self.problem(name, "must be true or false")
        return None

    def strings(self, name: str, allowed: Sequence[str] | None = None) -> tuple[str, ...]:
        """A repeatable parameter (`?status=a&status=b`); enum values may also be comma-joined
        (free-form names such as workflows are not split: a name may contain a comma)."""
        values = [v for v in self.query.getlist(name) if v != ""]
        if allowed is None:
            return tuple(values)
        split = [p.strip() for v in values for p in v.split(",") if p.strip()]
        bad = sorted({v for v in split if v not in allowed})
        if bad:
            self.problem(name, f"unknown value {', '.join(bad)}; allowed: {', '.join(allowed)}")
        return tuple(v for v in split if v in allowed)

    def interval(self, window: Window) -> tuple[str, int]:
        """`interval` (e.g. 1h, 15m, 1d) as (label, microseconds); by default one chosen from
        the window's length. Refused when it would make more than 2000 buckets."""
        raw = self.query.get("interval") or default_interval(window)
        m = _INTERVAL.fullmatch(raw)
        if m is None or int(m.group(1)) == 0:
            self.problem("interval", "must be a positive whole number and a unit s, m, h, d or w")
            raw = default_interval(window)
            m = _INTERVAL.fullmatch(raw)
            assert m is not None
        width = int(m.group(1)) * _UNIT_US[m.group(2)]
        span_us = (window.end - window.start) // timedelta(microseconds=1)
        if span_us // width + 1 > 2000:
            self.problem("interval", "makes more than 2000 buckets for this window; widen it")
        return raw, width


def parse_time(raw: str) -> datetime | None:
    """ISO 8601 (a date, or a date-time; no offset means UTC) or epoch milliseconds (Grafana's
    `${__from}`), as an aware UTC datetime; None if it is neither."""
    try:
        if _EPOCH_MS.fullmatch(raw):
            return datetime.fromtimestamp(int(raw) / 1000, UTC)
        parsed = datetime.fromisoformat(raw.strip())
    except (ValueError, OverflowError, OSError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def default_interval(window: Window) -> str:
    length = window.end - window.start
    for upto, label in _DEFAULT_INTERVALS:
        if length <= upto:
            return label
    return "7d"


# -- cursors ------------------------------------------------------------------------------


def encode_cursor(sort: str, key: int | float, run_id: str) -> str:
    """An opaque cursor: base64url (unpadded) of the JSON {sort, key, id} of a page's last row."""
    raw = json.dumps({"s": sort, "k": key, "id": run_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(params: Params, sort: str, key_type: str) -> tuple[int | float, str] | None:
    raw = params.query.get("cursor")
    if raw is None or raw == "":
        return None
    data: Any = None
    with contextlib.suppress(ValueError, binascii.Error):  # UnicodeDecodeError included
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    key = data.get("k") if isinstance(data, dict) else None
    run_id = data.get("id") if isinstance(data, dict) else None
    ok_key = isinstance(key, int) if key_type == "BIGINT" else isinstance(key, int | float)
    if (
        not isinstance(data, dict)
        or isinstance(key, bool)
        or not ok_key
        or not isinstance(run_id, str)
        or (key_type == "BIGINT" and isinstance(key, int) and abs(key) >= 2**63)
        or (isinstance(key, float) and not math.isfinite(key))
    ):
        params.problem("cursor", "is not a cursor this API issued")
        return None
    if data.get("s") != sort:
        params.problem("cursor", "was issued for another sort order; start again without it")
        return None
    assert isinstance(key, int | float)
    return key, run_id
