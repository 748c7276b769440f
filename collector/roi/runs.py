"""ROI of traced runs: each finished run of a workflow mapped to a task type (`roi:` in the config)
becomes an ROI event, with the arithmetic of `POST /v1/track` and the cost of the run's priced
LLM and tool calls.

A `RunConsumer` ("roi_runs") fed by `collector/runs/follow.py` from the `runs` change feed; it
writes `roi_events` rows in the transaction that moves its watermark, one event per (org, run_id).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from collector.auth.settings import PerOrgSettings, stored_documents
from collector.prices.fx import FxTable, shipped_only
from collector.roi import guard as roi_guard
from collector.roi import store as roi_store
from collector.roi.compute import UnknownTaskType, compute, usd_cost
from collector.roi.config import RoiConfig
from collector.roi.request import TrackRequest
from collector.roi.settings import OrgSettings, parse_settings
from collector.roi.shapes import event_record, response_body
from collector.roi.tasktypes import Catalogue

log = logging.getLogger(__name__)

NAME = "roi_runs"
SOURCE = "traced_run"  # metadata.source of the events this writes
# A run's final status → the outcome of its event. A run that failed did not do the task: it
# saves nothing and its cost counts against the savings, as `failure` does for /v1/track.
OUTCOME = {
    "success": "success",
    "error": "failure",
    "timeout": "failure",
    "loop_detected": "failure",
}
# What decides whether a stored event still describes the run (settings changes do not count:
# an event keeps the rate and currency it was valued at, as a tracked event does).
_FACTS = "agent_id, task_type, outcome, agent_duration_seconds, agent_cost_usd, occurred_at"


def event_id(org: str, run_id: str, ended: datetime) -> str:
    """`evt_` + a ULID whose time is the run's end and whose random part is a hash of
    (org, run_id): the same run always gets the same id, so a redone step writes it again."""
    ms = int(ended.timestamp() * 1000)
    rand = int.from_bytes(hashlib.sha256(f"{org}\0{run_id}".encode()).digest()[:10], "big")
    return roi_guard.event_id(ms, rand)


class RoiRuns:
    """The "roi_runs" consumer. Idempotent per (org, run_id): a run that comes again unchanged
    writes nothing; a changed one (a late span, a timeout that completed) replaces its event."""

    def __init__(
        self,
        config: RoiConfig,
        catalogue: Catalogue,
        fx: Callable[[], FxTable] | None = None,
        org_settings: PerOrgSettings | None = None,
    ) -> None:
        """`fx` gives the reference FX table in use (default: the shipped one);
        `org_settings` every org's settings with the config file's layer (the service's;
        without it, what the store holds)."""
        self._config = config
        self._catalogue = catalogue
        self._fx = fx or shipped_only()
        self._org_settings = org_settings
        self._warned: set[tuple[str, str]] = set()

    @property
    def name(self) -> str:
        return NAME

    def create_tables(self, cur: duckdb.DuckDBPyConnection) -> None:
        roi_store.create_in(cur)

    async def after_commit(self) -> None:
        return None

    def due(self) -> bool:
        return False

    def consume(
        self, cur: duckdb.DuckDBPyConnection, runs: list[dict[str, Any]], now_ns: int
    ) -> None:
        mapped: dict[str, list[tuple[dict[str, Any], str]]] = {}
        for run in runs:
            task_type = self._config.task_type(run["org"], run.get("workflow_name"))
            if task_type is not None and run.get("status") in OUTCOME and run.get("ended_at"):
                mapped.setdefault(run["org"], []).append((run, task_type))
        if not mapped:
            return
        now = datetime.fromtimestamp(now_ns / 1e9, UTC)
        settings = self._settings(cur, sorted(mapped))
        for org, pairs in sorted(mapped.items()):
            stored = _stored(cur, org, [run["run_id"] for run, _ in pairs])
            records = []
            for run, task_type in pairs:
                old = stored.get(run["run_id"])
                record = self._record(org, run, task_type, settings[org], now=now, old=old)
                if record is not None:
                    records.append(record)
            if records:
                _replace(cur, org, records)

    def _record(
        self,
        org: str,
        run: dict[str, Any],
        task_type: str,
        settings: OrgSettings,
        *,
        now: datetime,
        old: tuple[str, tuple[Any, ...]] | None,
    ) -> dict[str, Any] | None:
        """The run's event, or None when `old` (its stored event) still describes it."""
        ended: datetime = run["ended_at"]
        duration = None if run.get("duration_ms") is None else run["duration_ms"] / 1000
        calls, unknown = run.get("llm_call_count") or 0, run.get("cost_unknown_calls") or 0
        # Every call unpriced (and no priced tool call): the cost is unknown, not 0. Some
        # unpriced: the known part, with the number left out in metadata.
        known = not (calls and unknown >= calls) or bool(run.get("tool_cost_usd"))
        usd = run.get("cost_usd") if known else None
        metadata = {"source": SOURCE, "run_status": run["status"], "cost_unknown_calls": unknown}
        req = TrackRequest(
            agent_id=str(run["workflow_name"])[:255],
            task_type=task_type,
            outcome=OUTCOME[run["status"]],
            agent_duration_seconds=duration,
            metadata=metadata,
            trace_id=run.get("trace_id"),
            span_id=run.get("span_id"),
            run_id=run["run_id"],
        )
        cost = usd_cost(None if usd is None else float(usd), settings, self._fx())
        facts = (req.agent_id, task_type, req.outcome, duration, cost.usd, ended)
        if old is not None and _same(old[1], (*facts, run["status"])):
            return None
        try:
            s = compute(req, settings, self._catalogue, cost)
        except UnknownTaskType:
            if (org, task_type) not in self._warned:
                self._warned.add((org, task_type))
                log.warning(
                    "org %s: task type %r of workflow %r is unknown (no built-in, custom, override "
                    "or fallback baseline); its runs get no ROI events",
                    org, task_type, req.agent_id,
                )  # fmt: skip
            return None
        eid = old[0] if old is not None else event_id(org, run["run_id"], ended)
        body = json.dumps(response_body(eid, req, s, ended))
        record = event_record(
            eid, req, s, occurred=ended, now=now, key_id="", key=None, response=body
        )
        record["key_id"] = None  # no API key sent it
        return record

    def _settings(self, cur: duckdb.DuckDBPyConnection, orgs: list[str]) -> dict[str, OrgSettings]:
        if self._org_settings is not None:
            documents = self._org_settings.documents_in(cur, orgs)
        else:
            documents = stored_documents(cur, orgs)
        return {org: parse_settings(documents.get(org, {}), self._catalogue)[0] for org in orgs}


def _stored(
    cur: duckdb.DuckDBPyConnection, org: str, run_ids: list[str]
) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """run_id → (event id, the run facts it was computed from) of this org's run events."""
    cur.register("_roi_runs", pa.table({"run_id": run_ids}))
    try:
        rows = cur.execute(
            f"""SELECT run_id, event_id, {_FACTS}, json_extract_string(metadata, '$.run_status')
                FROM {roi_store.TABLE} WHERE org = ? AND key_id IS NULL
                  AND run_id IN (SELECT run_id FROM _roi_runs)""",
            [org],
        ).fetchall()
    finally:
        cur.unregister("_roi_runs")
    return {r[0]: (r[1], tuple(r[2:])) for r in rows}


def _same(old: tuple[Any, ...], new: tuple[Any, ...]) -> bool:
    return all(
        (a is None and b is None) or (a is not None and b is not None and (a == b or _close(a, b)))
        for a, b in zip(old, new, strict=True)
    )


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))
    return False


def _replace(cur: duckdb.DuckDBPyConnection, org: str, records: list[dict[str, Any]]) -> None:
    """Delete the runs' previous events and insert the new ones (same transaction)."""
    table = pa.Table.from_pylist(
        [{n: r.get(n) for n in roi_store.NAMES} | {"org": org} for r in records],
        roi_store.SCHEMA,
    )
    cur.register("_roi_new", table)
    try:
        cur.execute(
            f"""DELETE FROM {roi_store.TABLE} WHERE org = ? AND key_id IS NULL
                AND run_id IN (SELECT run_id FROM _roi_new)""",
            [org],
        )
        cur.execute(f"INSERT INTO {roi_store.TABLE} SELECT * FROM _roi_new")
    finally:
        cur.unregister("_roi_new")
