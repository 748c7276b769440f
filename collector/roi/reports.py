"""`GET /v1/reports`: ROI totals, groups and time series over `roi_events` for a window.

Named parametrised aggregates (the group key is chosen from a fixed set, a metadata key goes in
as a JSON-path parameter) with row caps; shaped as flat rows for Grafana's Infinity plugin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from collector.api.shapes import rfc3339
from collector.roi.store import TABLE, RoiEventFilter, where_sql
from collector.store.query import MAX_GROUPS, MAX_SERIES_ROWS, epoch_us
from collector.store.writer import Store

GROUP_COLUMNS = ("agent_id", "task_type", "model", "outcome", "currency")
METADATA_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")

_AGGREGATES = """count(*) AS events,
  count(*) FILTER (WHERE outcome = 'success') AS successes,
  count(*) FILTER (WHERE outcome = 'failure') AS failures,
  count(*) FILTER (WHERE outcome = 'needs_review') AS needs_review,
  sum(hours_saved) AS hours_saved, sum(cost_saved) AS cost_saved,
  sum(coalesce(agent_cost, 0)) AS agent_cost, sum(net_saved) AS net_saved,
  count(*) FILTER (WHERE agent_cost IS NULL) AS unknown_cost_events,
  sum(hours_saved) FILTER (WHERE outcome = 'needs_review') AS hours_needs_review,
  sum(cost_saved) FILTER (WHERE outcome = 'needs_review') AS cost_saved_needs_review"""
_METRICS = (
    "events", "successes", "failures", "needs_review", "hours_saved", "cost_saved",
    "agent_cost", "net_saved", "unknown_cost_events", "hours_needs_review",
    "cost_saved_needs_review",
)  # fmt: skip


@dataclass(frozen=True)
class GroupBy:
    """A fixed column, or `metadata.<key>` (the key validated, its path a parameter)."""

    label: str
    column: str | None = None
    metadata_key: str | None = None

    @staticmethod
    def parse(raw: str) -> GroupBy | None:
        if raw in GROUP_COLUMNS:
            return GroupBy(raw, column=raw)
        key = raw.removeprefix("metadata.")
        if raw.startswith("metadata.") and METADATA_KEY.fullmatch(key):
            return GroupBy(raw, metadata_key=key)
        return None

    def sql(self, params: list[Any]) -> str:
        if self.column is not None:
            return self.column  # one of GROUP_COLUMNS, never the caller's text
        params.append(metadata_path(self.metadata_key or ""))
        return "json_extract_string(metadata, ?)"


def metadata_path(key: str) -> str:
    return f'$."{key}"'


def report(
    store: Store, f: RoiEventFilter, group: GroupBy | None, width_us: int | None
) -> dict[str, Any]:
    """Totals for the window; per-group rows if grouped; per-bucket rows if an interval."""
    where, wparams = where_sql(f)
    totals = store.query(f"SELECT {_AGGREGATES} FROM {TABLE} WHERE {where}", wparams)[0]
    out: dict[str, Any] = {"totals": _metrics(totals)}
    currencies = store.query(
        f"SELECT DISTINCT currency FROM {TABLE} WHERE {where} ORDER BY 1 LIMIT 20", wparams
    )
    out["currencies"] = [r[0] for r in currencies]
    if group is not None:
        params: list[Any] = []
        key = group.sql(params)
        rows = store.query(
            f"SELECT {key} AS grp, {_AGGREGATES} FROM {TABLE} WHERE {where} "
            "GROUP BY grp ORDER BY net_saved DESC NULLS LAST, grp NULLS LAST LIMIT ?",
            [*params, *wparams, MAX_GROUPS],
        )
        out["groups"] = [{"group": r[0], **_metrics(r[1:])} for r in rows]
    if width_us is not None:
        params = [width_us, width_us]
        key = "NULL"
        if group is not None:
            key = group.sql(params)
        rows = store.query(
            f"SELECT (epoch_us(occurred_at) // ?) * ? AS bucket, {key} AS grp, {_AGGREGATES} "
            f"FROM {TABLE} WHERE {where} GROUP BY ALL ORDER BY bucket, grp NULLS LAST LIMIT ?",
            [*params, *wparams, MAX_SERIES_ROWS],
        )
        out["series"] = _fill(rows, f, width_us, group is not None)
    return out


def _fill(
    rows: list[tuple[Any, ...]], f: RoiEventFilter, width: int, grouped: bool
) -> list[dict[str, Any]]:
    """Flat rows (time, group, metrics…). Ungrouped, every bucket of the window is present
    (zeros where nothing happened), so a Grafana graph shows gaps as zero, not as a line."""
    found = {int(r[0]): r for r in rows}
    if grouped:
        return [{"time": rfc3339(int(r[0])), "group": r[1], **_metrics(r[2:])} for r in rows]
    first = (epoch_us(f.start) // width) * width
    last = (epoch_us(f.end) // width) * width
    out = []
    for t in range(first, min(last, first + (MAX_SERIES_ROWS - 1) * width) + 1, width):
        r = found.get(t)
        out.append({"time": rfc3339(t), **_metrics(r[2:] if r else None)})
    return out


def _metrics(row: tuple[Any, ...] | None) -> dict[str, Any]:
    values = dict(zip(_METRICS, row or (0,) * len(_METRICS), strict=True))
    events = int(values["events"] or 0)
    return {
        "events": events,
        "success_count": int(values["successes"] or 0),
        "failure_count": int(values["failures"] or 0),
        "needs_review_count": int(values["needs_review"] or 0),
        "success_rate": round(int(values["successes"] or 0) / events, 6) if events else None,
        "hours_saved": _round(values["hours_saved"], "0.001"),
        "cost_saved": _round(values["cost_saved"], "0.01"),
        "agent_cost": _round(values["agent_cost"], "0.000001"),
        "net_saved": _round(values["net_saved"], "0.000001"),
        "unknown_cost_events": int(values["unknown_cost_events"] or 0),
        "hours_saved_needs_review": _round(values["hours_needs_review"], "0.001"),
        "cost_saved_needs_review": _round(values["cost_saved_needs_review"], "0.01"),
    }


def _round(value: Any, places: str) -> float:
    # Each stored amount is already rounded; this only removes float noise from the sum.
    return float(Decimal(repr(float(value or 0))).quantize(Decimal(places), ROUND_HALF_UP))
