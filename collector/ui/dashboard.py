"""The pages of the dashboard read API (`dashboard-read-api.txt`): overview, runs, one run with its
waterfall, workflows and one workflow. Each needs a read key, as the API does.

Query strings are read by the API's own parser (`collector/api/params.py`, `runs_request`), data
by the query layer (`collector/read/`), so a page shows what its API route answers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.responses import Response
from starlette.routing import Route

from collector.api.params import Params, encode_cursor
from collector.errors import ApiError
from collector.read import metrics as qm
from collector.read import runs as qr
from collector.read.api import runs_request
from collector.read.detail import FullDetail, get_detail
from collector.read.shapes import run_roi
from collector.read.trace import Trace, run_trace
from collector.store.query import MAX_BUCKETS, RUN_STATUSES, Window, epoch_us
from collector.ui import charts
from collector.ui import format as fmt
from collector.ui.app import Page, UiApp
from collector.ui.waterfall import layout

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


def routes(ui: UiApp) -> list[Route]:
    pages = Dashboard(ui)
    get = ["GET"]
    return [
        Route("/ui/", ui.page(pages.overview, "read"), methods=get),
        Route("/ui/runs", ui.page(pages.runs, "read"), methods=get),
        Route("/ui/runs/{run_id}", ui.page(pages.run, "read"), methods=get),
        Route("/ui/workflows", ui.page(pages.workflows, "read"), methods=get),
        Route("/ui/workflows/{name:path}", ui.page(pages.workflow, "read"), methods=get),
    ]


def params(page: Page, now: datetime) -> Params:
    """The API's parser over the page's query string; `range=24h|7d|30d` stands for a `from`."""
    span = RANGES.get(page.query.get("range", ""))
    if span is not None and not page.query.get("from"):
        pairs = [*page.query.multi_items(), ("from", (now - span).isoformat())]
        return Params(QueryParams(pairs), now)
    return Params(page.query, now)


def buckets(window: Window, width_us: int) -> list[int]:
    first = epoch_us(window.start) // width_us * width_us
    last = epoch_us(window.end) // width_us * width_us
    return list(range(first, last + width_us, width_us))[:MAX_BUCKETS]


def bucket_label(us: int, width_us: int) -> str:
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    return t.strftime("%b %d") if width_us >= DAY_US else t.strftime("%b %d %H:%M")


class Dashboard:
    def __init__(self, ui: UiApp) -> None:
        self.ui = ui

    # -- overview --------------------------------------------------------------------------

    async def overview(self, page: Page) -> Response:
        now = self.ui.clock()
        q = params(page, now)
        window = q.window()
        q.raise_if_invalid()
        width = DAY_US if window.end - window.start >= timedelta(days=3) else HOUR_US

        def load() -> tuple[qm.Overview, list[qm.SeriesRow]]:
            with self.ui.store.reader() as r:
                # No top models here: that scan of every LLM call is the API overview's cost.
                return qm.page_overview(r, page.org, window, width_us=width)

        found, series = await self.ui.read(load)
        slots = buckets(window, width)
        labels = [bucket_label(b, width) for b in slots]
        cost = charts.top_series([(s.time_us, s.series, s.cost_usd) for s in series], slots)
        runs = charts.top_series([(s.time_us, s.series, float(s.runs)) for s in series], slots)
        cur, prev = found.totals, found.previous
        per = "day" if width == DAY_US else "hour"
        return self.ui.render(
            page,
            page.request,
            "overview.html",
            window=window,
            ranges=list(RANGES),
            current_range=page.query.get("range", ""),
            totals=cur,
            previous=prev,
            changes={
                "runs": fmt.change(cur.runs, prev.runs),
                "cost": fmt.change(cur.cost_usd, prev.cost_usd),
                "tokens": fmt.change(cur.tokens, prev.tokens),
                "error_rate": fmt.change(cur.error_rate, prev.error_rate),
            },
            top_workflows=found.top_workflows,
            cost_chart=charts.stacked_bars(
                labels, cost, title=f"Cost per {per} by workflow", fmt=fmt.usd
            ),
            runs_chart=charts.stacked_bars(
                labels, runs, title=f"Runs per {per} by workflow", fmt=lambda v: f"{v:,.0f}"
            ),
            legend=[s.name for s in cost],
            runs_legend=[s.name for s in runs],
        )

    # -- runs ------------------------------------------------------------------------------

    async def runs(self, page: Page) -> Response:
        now = self.ui.clock()
        q = params(page, now)
        where, sort, after, limit = runs_request(q, page.org)
        problems = list(q.problems)
        result: qr.RunPage | None = None
        if not problems:

            def load() -> qr.RunPage:
                with self.ui.store.reader() as r:
                    return qr.list_runs(r, where, sort, after, limit)

            result = await self.ui.read(load)
        next_url = None
        if result is not None and result.next_position is not None:
            key, run_id = result.next_position
            kept = [(k, v) for k, v in page.query.multi_items() if k != "cursor"]
            next_url = "/ui/runs?" + urlencode(
                [*kept, ("cursor", encode_cursor(sort, key, run_id))]
            )
        first_url = None
        if page.query.get("cursor"):
            kept = [(k, v) for k, v in page.query.multi_items() if k != "cursor"]
            first_url = "/ui/runs?" + urlencode(kept)
        return self.ui.render(
            page,
            page.request,
            "runs.html",
            422 if problems else 200,
            problems=problems,
            page_of_runs=result,
            form={
                "from": page.query.get("from", ""),
                "to": page.query.get("to", ""),
                "workflows": list(where.workflows),
                "statuses": list(where.statuses),
                "cost_min": page.query.get("cost_min", ""),
                "cost_max": page.query.get("cost_max", ""),
                "sort": sort,
                "limit": limit,
                "range": page.query.get("range", ""),
            },
            ranges=list(RANGES),
            sorts=list(qr.SORTS),
            statuses=RUN_STATUSES,
            limits=(20, 50, 100),
            next_url=next_url,
            first_url=first_url,
        )

    # -- one run ---------------------------------------------------------------------------

    async def run(self, page: Page) -> Response:
        run_id = str(page.request.path_params["run_id"])

        def load() -> tuple[FullDetail, Trace] | None:
            found = get_detail(self.ui.store, page.org, run_id)
            if found is None:
                return None
            s = found.run.summary
            end_us = s.ended_at_us if s.ended_at_us is not None else epoch_us(self.ui.clock())
            with self.ui.store.reader() as r:
                trace = run_trace(
                    r, page.org, str(found.run.extra["trace_id"]), s.started_at_us * 1000,
                    end_us * 1000,
                )  # fmt: skip
            return found, trace

        loaded = await self.ui.read(load)
        if loaded is None:
            raise ApiError(404, "not_found", "No run with this id in your org.")
        found, trace = loaded
        detail = found.run
        trace_id = str(detail.extra["trace_id"])
        root = run_id[len(trace_id) :] if run_id.startswith(trace_id) else None
        spans = trace.spans
        if root is None or root not in {s.span_id for s in spans}:
            # Without its own span in the window, the run's steps are its LLM and tool calls.
            calls = {c.span_id for c in detail.llm_calls} | {t.span_id for t in detail.tool_events}
            spans = [s for s in spans if s.span_id in calls]
            root = None
        children = {
            c.id[len(trace_id) :]: c.id for c in detail.child_runs if c.id.startswith(trace_id)
        }
        waterfall = layout(spans, root, children)
        roi = run_roi(found.roi)
        return self.ui.render(
            page,
            page.request,
            "run.html",
            run=detail.summary,
            extra=detail.extra,
            detail=detail,
            waterfall=waterfall,
            trace_truncated=trace.truncated,
            alert_events=found.alert_events,
            evaluations=found.evaluations,
            roi=roi,
            roi_events=found.roi,
        )

    # -- workflows -------------------------------------------------------------------------

    async def workflows(self, page: Page) -> Response:
        q = params(page, self.ui.clock())
        window = q.window()
        sort = q.choice("sort", qm.WORKFLOW_SORTS, "total_cost_desc") or "total_cost_desc"
        q.raise_if_invalid()
        rows = await self.ui.read(qm.list_workflows, self.ui.store, page.org, window, sort)
        return self.ui.render(
            page,
            page.request,
            "workflows.html",
            workflows=rows,
            window=window,
            sort=sort,
            sorts=qm.WORKFLOW_SORTS,
            ranges=list(RANGES),
            current_range=page.query.get("range", ""),
        )

    async def workflow(self, page: Page) -> Response:
        name = str(page.request.path_params["name"])
        q = params(page, self.ui.clock())
        window = q.window()
        label, width = q.interval(window)
        q.raise_if_invalid()

        def load() -> tuple[list[qm.Bucket], list[qm.ToolStats]] | None:
            with self.ui.store.reader() as r:
                if not qm.workflow_exists(r, page.org, name):
                    return None
                stats = qm.workflow_stats(r, page.org, name, window, width)
                # The buckets count the window's runs, unless capped short of its end.
                runs = sum(b.runs for b in stats) if len(stats) < MAX_BUCKETS else None
                tools = qm.workflow_tools(r, page.org, name, window, runs=runs)
            return stats, tools

        loaded = await self.ui.read(load)
        if loaded is None:
            raise ApiError(404, "not_found", "No workflow of this name in your org.")
        stats, tools = loaded
        labels = [bucket_label(b.start_us, width) for b in stats]
        ok = [float(b.runs - b.errors) for b in stats]
        errors = [float(b.errors) for b in stats]
        return self.ui.render(
            page,
            page.request,
            "workflow.html",
            name=name,
            window=window,
            interval=label,
            stats=stats,
            tools=tools,
            ranges=list(RANGES),
            current_range=page.query.get("range", ""),
            totals={
                "runs": sum(b.runs for b in stats),
                "errors": sum(b.errors for b in stats),
                "cost": sum(b.cost_usd for b in stats),
                "tokens": sum(int(b.tokens or 0) for b in stats),
            },
            runs_chart=charts.stacked_bars(
                labels,
                [charts.Series("succeeded or running", ok), charts.Series("failed", errors)],
                title=f"Runs per {label}",
                fmt=lambda v: f"{v:,.0f}",
            ),
            cost_chart=charts.stacked_bars(
                labels,
                [charts.Series("cost", [b.cost_usd for b in stats])],
                title=f"Cost per {label}",
                fmt=fmt.usd,
            ),
            latency_chart=charts.lines(
                labels,
                [
                    charts.Series("p50", [b.p50_duration_ms for b in stats]),
                    charts.Series("p95", [b.p95_duration_ms for b in stats]),
                ],
                title=f"Run duration per {label} (p50 and p95)",
                fmt=fmt.duration,
            ),
            runs_url="/ui/runs?" + urlencode([("workflow", name)]),
        )
