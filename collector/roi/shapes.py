"""JSON shapes of the ROI API: the 201 body of /v1/track, stored events, the task-type list.

`roi_api` builds these from `roi_math`'s results and `roi_store`'s rows; times are RFC 3339 UTC
with milliseconds (as the doc's example), amounts plain JSON numbers (as the doc's example).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from collector.api import shapes as js
from collector.prices.fx import Fx
from collector.roi.compute import Savings
from collector.roi.request import TrackRequest
from collector.roi.settings import OrgSettings
from collector.roi.tasktypes import Catalogue


def response_body(
    event_id: str, req: TrackRequest, s: Savings, occurred: datetime
) -> dict[str, Any]:
    """The 201 body: exactly the doc's fields, in the doc's order."""
    rate = s.hourly_rate
    return {
        "event_id": event_id,
        "agent_id": req.agent_id,
        "task_type": req.task_type,
        "outcome": req.outcome,
        "resolved_baseline_minutes": float(s.baseline.minutes),
        "resolved_baseline_source": s.baseline.source,
        "resolved_hourly_rate": int(rate) if float(rate).is_integer() else rate,
        "currency": s.currency,
        "agent_duration_seconds": req.agent_duration_seconds,
        "hours_saved": float(s.hours_saved),
        "cost_saved": float(s.cost_saved),
        "agent_cost": None if s.cost.amount is None else float(s.cost.amount),
        "resolved_cost_source": s.cost.source,
        "net_saved": float(s.net_saved),
        "occurred_at": js.iso(occurred),
        # Extension: the USD -> currency rate a computed cost used, and the day it is of.
        **({"fx": fx_shape(s.cost.fx)} if s.cost.fx is not None else {}),
    }


def fx_shape(fx: Fx) -> dict[str, Any]:
    return {"rate": fx.rate, "date": fx.date, "source": fx.source}


def event_record(
    event_id: str,
    req: TrackRequest,
    s: Savings,
    *,
    occurred: datetime,
    now: datetime,
    key_id: str,
    key: str | None,
    response: str,
) -> dict[str, Any]:
    audit = req.audit_sample
    return {
        "event_id": event_id,
        "agent_id": req.agent_id,
        "task_type": req.task_type,
        "outcome": req.outcome,
        "occurred_at": occurred,
        "received_at": now,
        "agent_duration_seconds": req.agent_duration_seconds,
        "baseline_minutes": s.baseline.minutes,
        "baseline_source": s.baseline.source,
        "hourly_rate": s.hourly_rate,
        "currency": s.currency,
        "hours_saved": float(s.hours_saved),
        "cost_saved": float(s.cost_saved),
        "agent_cost": None if s.cost.amount is None else float(s.cost.amount),
        "cost_source": s.cost.source,
        "agent_cost_usd": s.cost.usd,
        "price_book_version": s.cost.price_book_version,
        "net_saved": float(s.net_saved),
        "model": req.model or (audit or {}).get("model"),
        "tokens_in": req.tokens_in,
        "tokens_out": req.tokens_out,
        "metadata": None if req.metadata is None else json.dumps(req.metadata),
        "audit_sample": None if audit is None else json.dumps(audit),
        "trace_id": req.trace_id,
        "span_id": req.span_id,
        "run_id": req.run_id,
        "key_id": key_id,
        "idempotency_key": key,
        "response": response,
    }


_RENAMED = {
    "baseline_minutes": "resolved_baseline_minutes",
    "baseline_source": "resolved_baseline_source",
    "hourly_rate": "resolved_hourly_rate",
    "cost_source": "resolved_cost_source",
}


def event_json(e: dict[str, Any]) -> dict[str, Any]:
    """A stored event as reads return it: the 201 fields plus what was stored beside them."""
    out = {_RENAMED.get(k, k): v for k, v in e.items() if k != "key_id"}
    out["occurred_at"] = js.iso(e["occurred_at"])
    out["received_at"] = js.iso(e["received_at"])
    rate = out["resolved_hourly_rate"]
    out["resolved_hourly_rate"] = int(rate) if float(rate).is_integer() else rate
    return out


def task_types_body(catalogue: Catalogue, settings: OrgSettings) -> dict[str, Any]:
    """Built-in and custom types, with the org's overrides applied (and marked)."""
    over = settings.task_type_overrides
    listed: list[dict[str, Any]] = []
    for t in catalogue.types:
        listed.append(_type(t.name, t.baseline_minutes, t.description, "builtin", over))
    for name, c in sorted(settings.custom_task_types.items()):
        listed.append(_type(name, c.baseline_minutes, c.description, "custom", over))
    known = {t["name"] for t in listed}
    for name in sorted(set(over) - known):
        listed.append(_type(name, over[name], "", "override", over))
    return {
        "version": catalogue.version,
        "fallback_baseline_minutes": settings.fallback_baseline_minutes,
        "task_types": listed,
    }


def _type(
    name: str, minutes: float, description: str, source: str, over: dict[str, float]
) -> dict[str, Any]:
    return {
        "name": name,
        "baseline_minutes": over.get(name, minutes),
        "source": "override" if name in over else source,
        "default_baseline_minutes": None if source == "override" else minutes,
        "description": description,
    }
