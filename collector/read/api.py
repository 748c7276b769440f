"""The dashboard read API (the Trakr dashboard API doc): runs, workflows, alert events, metrics.

GET only, read tokens only, org-scoped, 300 requests/minute/token. The routes are operations of
the one endpoint wrapper (`collector/api/routes.py`); a handler reads its checked query string
(`collector/api/params.py`), calls one query function, and serialises it (`read/shapes.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from starlette.routing import BaseRoute

from collector.api import params as pm
from collector.api import schema as sc
from collector.api import shapes as js
from collector.api.apis import READ
from collector.api.params import Params, decode_cursor, encode_cursor
from collector.api.ratelimit import Limiter, SlidingWindowLimiter
from collector.api.routes import Keys, Operation, PerKey, SessionOnly, routes
from collector.auth.keys import Authenticator
from collector.auth.settings import PerOrgSettings
from collector.errors import ApiError
from collector.model import Principal
from collector.read import alerts
from collector.read import compare as qc
from collector.read import metrics as qm
from collector.read import runs as qr
from collector.read import shapes as rs
from collector.read.compare_api import CompareApi
from collector.read.detail import get_detail
from collector.store.query import RUN_STATUSES, Window
from collector.store.writer import Store

TIMESERIES_GROUPS = ("workflow", "model", "status")
ALERT_EVENTS_MAX_LIMIT = 100


class ReadApi:
    def __init__(
        self,
        store: Store,
        auth: Authenticator,
        limiter: Limiter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        org_settings: PerOrgSettings | None = None,
    ) -> None:
        """`org_settings`: every org's settings as the service holds them (run comparison's
        gate); by default the store's alone."""
        self._store = store
        self._auth = auth
        self._limiter: Limiter = limiter or SlidingWindowLimiter(300, 60.0)
        self._clock = clock
        self._org_settings = org_settings or PerOrgSettings(store, [qc.SETTINGS])

    def routes(self) -> list[BaseRoute]:
        return routes(self.operations())

    def operations(self) -> list[Operation]:
        def get(path: str, handler: Any, summary: str, *params: pm.Param) -> Operation:
            return Operation(
                READ,
                "GET",
                path,
                lambda call: handler(call.caller, call.query, call.path),
                summary,
                Keys(self._auth, ("read",)),
                params=params,
                limit=PerKey(self._limiter),
                blocking=True,
                clock=self._clock,
                errors={403: "the feature is not enabled"} if "compare" in path else {},
            )

        window = (pm.FROM, pm.TO)
        return [
            get(
                "/api/runs",
                self._runs,
                "List runs",
                *window,
                pm.strings("workflow", "workflow names"),
                pm.strings("status", "run statuses", RUN_STATUSES),
                pm.Param("cost_min", sc.number(), "minimum cost in USD"),
                pm.Param("cost_max", sc.number(), "maximum cost in USD"),
                pm.Param("sort", sc.enum(tuple(qr.SORTS))),
                pm.CURSOR,
                pm.limit(),
            ),
            get(
                "/api/runs/compare",
                CompareApi(self._store, self._org_settings).compare,
                "Two runs of one workflow side by side",
                # Required, but checked by the handler: the org's gate (403) comes first.
                pm.Param("run_a", sc.string(200), "a run id (required)"),
                pm.Param("run_b", sc.string(200), "a run of the same workflow (required)"),
            ),
            get("/api/runs/{run_id}", self._run, "One run with its calls and child runs"),
            get(
                "/api/workflows",
                self._workflows,
                "Workflow summaries",
                *window,
                pm.Param("sort", sc.enum(qm.WORKFLOW_SORTS)),
            ),
            get(
                "/api/workflows/{name:path}/stats",
                self._workflow_stats,
                "A workflow's runs, cost and errors over time",
                *window,
                pm.INTERVAL,
            ),
            get(
                "/api/workflows/{name:path}/tools",
                self._workflow_tools,
                "A workflow's tool calls",
                *window,
            ),
            get(
                "/api/alert-events",
                self._alert_events,
                "Fired alert events",
                *window,
                pm.Param("rule_id", sc.string(200)),
                pm.Param("resolved", sc.boolean()),
                pm.CURSOR,
                pm.limit(maximum=ALERT_EVENTS_MAX_LIMIT),
            ),
            get("/api/metrics/overview", self._overview, "Overview metrics", *window),
            get(
                "/api/metrics/timeseries",
                self._timeseries,
                "One metric over time (flat rows for Grafana)",
                *window,
                pm.INTERVAL,
                pm.Param("metric", sc.enum(qm.RUN_METRICS)),
                pm.Param("group_by", sc.enum(TIMESERIES_GROUPS)),
            ),
            Operation(
                READ,
                "GET",
                "/api/org/context",
                lambda call: None,
                "Excluded for bearer tokens (a dashboard-session route): always 401",
                SessionOnly(),
            ),
        ]

    # -- runs ------------------------------------------------------------------------------

    def _runs(self, p: Principal, q: Params, _: dict[str, Any]) -> dict[str, Any]:
        where, sort, after, limit = runs_request(q, p.org)
        q.raise_if_invalid()
        # The count and the page from one snapshot: the total agrees with the page.
        with self._store.reader() as r:
            page = qr.list_runs(r, where, sort, after, limit)
        nxt = page.next_position
        return {
            "runs": [rs.run_summary(r) for r in page.runs],
            "next_cursor": None if nxt is None else encode_cursor(sort, nxt[0], nxt[1]),
            "total_count": page.total_count,
        }

    def _run(self, p: Principal, q: Params, path: dict[str, str]) -> dict[str, Any]:
        # Beside the doc's fields: the verdicts of output rules (docs/logs.md) and the hours and
        # money the run saved (docs/roi.md).
        found = get_detail(self._store, p.org, str(path["run_id"]))
        if found is None:
            raise ApiError(404, "not_found", "Run not found")
        body = rs.run_detail(found.run, found.alert_events)
        return body | {"roi": rs.run_roi(found.roi), "evaluations": found.evaluations}

    # -- workflows -------------------------------------------------------------------------

    def _workflows(self, p: Principal, q: Params, _: dict[str, Any]) -> dict[str, Any]:
        window = q.window()
        sort = q.choice("sort", qm.WORKFLOW_SORTS, "total_cost_desc") or "total_cost_desc"
        q.raise_if_invalid()
        rows = qm.list_workflows(self._store, p.org, window, sort)
        return {"workflows": [rs.workflow(w) for w in rows]}

    def _workflow_stats(self, p: Principal, q: Params, path: dict[str, Any]) -> dict[str, Any]:
        name = str(path["name"])
        window = q.window()
        label, width = q.interval(window)
        q.raise_if_invalid()
        if not qm.workflow_exists(self._store, p.org, name):
            raise ApiError(404, "not_found", "Workflow not found")
        buckets = qm.workflow_stats(self._store, p.org, name, window, width)
        return {
            "workflow_name": name,
            "from": js.iso(window.start),
            "to": js.iso(window.end),
            "interval": label,
            "buckets": [rs.bucket(b) for b in buckets],
        }

    def _workflow_tools(self, p: Principal, q: Params, path: dict[str, Any]) -> dict[str, Any]:
        name = str(path["name"])
        window = q.window()
        q.raise_if_invalid()
        if not qm.workflow_exists(self._store, p.org, name):
            raise ApiError(404, "not_found", "Workflow not found")
        tools = qm.workflow_tools(self._store, p.org, name, window)
        return {
            "workflow_name": name,
            "from": js.iso(window.start),
            "to": js.iso(window.end),
            "tools": [rs.tool(t) for t in tools],
        }

    # -- alert events and metrics ------------------------------------------------------------

    def _alert_events(self, p: Principal, q: Params, _: dict[str, Any]) -> dict[str, Any]:
        where = alerts.AlertEventFilter(
            org=p.org,
            window=q.window(),
            rule_id=q.query.get("rule_id") or None,
            resolved=q.boolean("resolved"),
        )
        limit = q.limit(maximum=ALERT_EVENTS_MAX_LIMIT)
        after = decode_cursor(q, alerts.EVENT_SORT, "BIGINT")
        q.raise_if_invalid()
        position = None if after is None else (int(after[0]), after[1])
        events, nxt = alerts.list_events(self._store, where, position, limit)
        cursor = None if nxt is None else encode_cursor(alerts.EVENT_SORT, nxt[0], nxt[1])
        return {"alert_events": events, "next_cursor": cursor}

    def _overview(self, p: Principal, q: Params, _: dict[str, Any]) -> dict[str, Any]:
        window = q.window()
        q.raise_if_invalid()
        result = rs.overview(read_overview(self._store, p.org, window))
        previous = window.previous()
        window_keys = {"from": js.iso(window.start), "to": js.iso(window.end)}
        window_keys["previous_from"] = js.iso(previous.start)
        window_keys["previous_to"] = js.iso(previous.end)
        return {**window_keys, **result}

    def _timeseries(self, p: Principal, q: Params, _: dict[str, Any]) -> list[dict[str, Any]]:
        window = q.window()
        metric = q.choice("metric", qm.RUN_METRICS, "cost_usd") or "cost_usd"
        group_by = q.choice("group_by", TIMESERIES_GROUPS, None)
        width = q.interval(window)[1]
        if group_by == "model" and metric not in qm.MODEL_METRICS:
            q.problem("metric", f"with group_by=model must be one of {', '.join(qm.MODEL_METRICS)}")
        q.raise_if_invalid()
        points = qm.timeseries(
            self._store, p.org, window, metric=metric, width_us=width, group_by=group_by
        )
        # Flat rows (time, series, value) at the root: Grafana Infinity's backend parser reads
        # them as a long time-series frame with no root selector and no transformation.
        return [
            {
                "time": js.rfc3339(pt.time_us),
                "series": pt.series,
                "value": round(float(pt.value), 6) if metric == "cost_usd" else int(pt.value),
            }
            for pt in points
        ]


def runs_request(q: Params, org: str) -> tuple[qr.RunFilter, str, qr.Position | None, int]:
    """`GET /api/runs`'s query string as (filter, sort, cursor position, limit); problems are
    noted on `q`. The web UI's run list reads its form with this too."""
    where = qr.RunFilter(
        org=org,
        window=q.window(),
        workflows=q.strings("workflow"),
        statuses=q.strings("status", RUN_STATUSES),
        cost_min=q.number("cost_min"),
        cost_max=q.number("cost_max"),
    )
    sort = q.choice("sort", tuple(qr.SORTS), "started_at_desc") or "started_at_desc"
    limit = q.limit()
    return where, sort, decode_cursor(q, sort, qr.SORTS[sort].key_type), limit


def read_overview(store: Store, org: str, window: Window) -> qm.Overview:
    """`GET /api/metrics/overview`'s numbers. The scan of LLM-call spans for the top models
    (most of the time) runs on a reader of its own while the other reader sums the runs."""

    def models() -> qm.TopModels:
        with store.reader() as r:
            return qm.top_models(r, org, window)

    with ThreadPoolExecutor(max_workers=1) as pool:
        found = pool.submit(models)
        with store.reader() as r:
            return qm.overview(r, org, window, found.result)
