"""The service lifecycle: open the store, start exporters, decoders and listeners, and the
background jobs under their leases; drain and stop.

`agentledger serve` builds one `Service` from a `Config` and runs it until SIGTERM/SIGINT.
Start order is store → exporters → pipeline → receivers; stop runs in reverse, draining each.
On a shared store (PostgreSQL catalog) each background job runs on one node of the cluster at a
time (`collector/cluster/keeper.py`); alone, this node runs them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from collector import __version__, registry
from collector.alerts.api import AlertsApi
from collector.alerts.config import declared_rules
from collector.alerts.consumer import AlertsConsumer
from collector.api import openapi
from collector.api.apis import ALL as ALL_APIS
from collector.api.ratelimit import LimiterFactory, local_limiters
from collector.api.routes import NotFound, Operation, routes
from collector.api.server import Listener, listen
from collector.auth.api import AdminApi
from collector.auth.keys import Authenticator, bootstrap_default_org, ensure_org
from collector.auth.settings import PerOrgSettings
from collector.banner import Endpoints, print_ready
from collector.cluster.claims import Claims
from collector.cluster.fence import Fence
from collector.cluster.keeper import Job, Keeper
from collector.cluster.leases import Leases
from collector.cluster.limits import shared_limiters
from collector.cluster.listen import Notifications
from collector.cluster.node import node_id
from collector.cluster.postgres import COMMITS_CHANNEL, KEYS_CHANNEL, Coordinator
from collector.config import Config, org_settings_groups
from collector.configparse import ConfigError, ConfigIssue, split_endpoint
from collector.evals.api import EvalsApi
from collector.evals.judge import Judge
from collector.evals.runs import LogRulesConsumer
from collector.governance.converge import WATERMARK as CONVERGE_WATERMARK
from collector.governance.converge import SpanConvergence
from collector.governance.maintenance import Maintenance
from collector.mcp.api import McpApi
from collector.mcp.read_api import McpReadApi
from collector.model import Exporter, Scope
from collector.outbound.outbox import DRAIN_S, Outbox
from collector.pipeline import DecodePool, Pipeline, total_memory
from collector.prices.feed import PriceFeed
from collector.prices.fx import STATE_FILE as FX_STATE
from collector.prices.fx import FxFeed
from collector.read.api import ReadApi
from collector.read.views import create_views
from collector.receivers.otlp_grpc import OtlpGrpcReceiver
from collector.receivers.otlp_http import OtlpHttpReceiver
from collector.roi.api import RoiApi
from collector.roi.runs import RoiRuns
from collector.roi.tasktypes import load_catalogue
from collector.runs.derive import WATERMARK as DERIVE_WATERMARK
from collector.runs.derive import DeriveStats, RunDeriver
from collector.runs.follow import RunConsumer, RunFollower
from collector.runs.lag import DerivationLag
from collector.secretbox import SecretBox
from collector.store.lake import StoreSettings, prime_table_stats
from collector.store.writer import Store
from collector.telemetry import CONTENT_TYPE, Metrics
from collector.ui.app import UiApp
from processors.output_rules.engine import RuleEngine
from processors.runs.assemble import RunsProcessor

log = logging.getLogger(__name__)
MIB = 1024 * 1024


class Service:
    def __init__(self, config: Config, out: TextIO) -> None:
        self.config = config
        self._out = out
        self.node = node_id(config.cluster.node_id)
        shared = config.storage.shared
        # On a shared store every series carries this node's id, so a scrape of N nodes adds up.
        self.metrics = Metrics({"node": self.node} if shared else None)
        self.coordinator = (
            Coordinator(config.storage.postgres_conninfo(), application_name=self.node)
            if shared
            else None
        )
        self.keeper: Keeper | None = None
        self._keeping: asyncio.Task[None] | None = None
        self._listener: Notifications | None = None
        # Rate limits and idempotency claims: this process's own, or the cluster's.
        self._limiters: LimiterFactory = local_limiters
        self._claims: Claims | None = None
        if self.coordinator is not None:
            self._limiters = shared_limiters(self.coordinator)
            self._claims = Claims(self.coordinator, self.node)
        self._parts = registry.components(config)
        # A pipeline's batch / memory_limiter (Collector configs) set the commit and admission.
        self._batch, self._limiter = registry.ingest_settings(self._parts)
        self.store = Store(StoreSettings.from_config(config.storage, self._batch))
        self.auth = Authenticator(self.store)
        # The `redact:` rules for native payloads, counted in /metrics like the processor's.
        self.redactor = registry.build_redactor(config, self._count_redaction)
        # Provider keys, webhook secrets and channel secrets are sealed with this box.
        self.box = SecretBox.open(Path(config.storage.path), config.secrets.key)
        self.catalogue = load_catalogue()  # the shipped task types, read once
        # Every org's settings: the config file's layer under what admins set through routes.
        groups = org_settings_groups(self.catalogue)
        self.org_settings = PerOrgSettings(self.store, groups, config.org_settings(groups))
        self.mcp = McpApi(self.store, self.auth, config.mcp, self.redactor)
        # Alerts' notifications, callbacks and notifications of evaluated outputs: each feature
        # registers its topic; delivered by one loop, started last and drained on stop.
        self.outbox = Outbox(self.store)
        self.endpoints = Endpoints()
        self._state = "starting"
        self._exporters: dict[str, Exporter] = {}
        self._pool: DecodePool | None = None
        self._pipeline: Pipeline | None = None
        self._grpc: OtlpGrpcReceiver | None = None
        self._listeners: list[Listener] = []
        self._flusher: asyncio.Task[None] | None = None
        self._first_keys: Mapping[Scope, str] | None = None
        self._deriver: RunDeriver | None = None
        self.lag: DerivationLag | None = None  # with derivation on this node
        self._roi: RoiApi | None = None
        self._stop_deriving = asyncio.Event()
        self._follower: RunFollower | None = None
        self._pricing: asyncio.Task[None] | None = None
        self._fx: asyncio.Task[None] | None = None
        self._logs: EvalsApi | None = None  # /api/logs: output evaluation
        self.maintenance: Maintenance | None = None  # retention, compaction, disk cap

    # -- start -----------------------------------------------------------------------------

    async def start(self) -> None:
        parts = self._parts
        await asyncio.to_thread(self.store.open)
        await asyncio.to_thread(self.outbox.create_tables)
        if self.coordinator is not None:
            # Leases, and the catalog's fence and commit triggers (DuckLake's tables exist now).
            await asyncio.to_thread(self.coordinator.prepare)
        await asyncio.to_thread(self._provision_keys)
        await asyncio.to_thread(self.mcp.create_tables)

        self._exporters, by_signal = registry.build_exporters(parts, self.store)
        for exporter in self._exporters.values():
            await exporter.start()
        limits = self.config.limits
        self._pool = DecodePool(
            limits.decode_workers, registry.processor_factory(parts), limits.decode()
        )
        await asyncio.to_thread(self._pool.start)
        fx = await asyncio.to_thread(
            FxFeed,
            self.config.prices.fx,
            Path(self.config.storage.path, FX_STATE),
            self.metrics,
        )
        runs = RunsProcessor(registry.runs_config(parts))
        if runs.config.enabled and self.coordinator is None:
            # Spans committed and not derived yet: /metrics, /health, and ingest admission.
            # Counted by this process; on a shared store other nodes commit and one node
            # derives, so the bound is not kept there (docs/scaling.md).
            self.lag = DerivationLag(
                runs.config.max_lag_s,
                pace_lag_s=runs.config.pace_lag_s,
                pace_wait_s=runs.config.pace_wait_s,
            )
            self.store.spans_committed = self.lag.committed
        self._deriver = RunDeriver(self.store, runs, offload=self._pool.call, lag=self.lag)
        await asyncio.to_thread(self._deriver.create_tables)
        # Woken by commits; the tick is for alert windows, which need no finer one. Runs
        # change only when the deriver commits, at most once per `interval_ms`: stepping on
        # every ingest commit read the runs change feed ~5 times a second for nothing.
        tick = min(5.0, float(self.config.alerts.evaluation_interval_s))
        self._follower = RunFollower(
            self.store,
            self._run_consumers(fx),
            interval_s=tick,
            min_gap_s=runs.config.interval_ms / 1000,
        )
        await asyncio.to_thread(self._follower.create_tables)
        await asyncio.to_thread(create_views, self.store)
        self._roi = RoiApi(
            self.store,
            self.auth,
            self.catalogue,
            registry.build_processor(parts, "cost"),
            redactor=self.redactor,
            fx=fx.current,
            org_settings=self.org_settings,
            limiters=self._limiters,
            claims=self._claims,
        )
        await asyncio.to_thread(self._roi.create_tables)
        self._logs = self._evals_api()
        await asyncio.to_thread(self._logs.create_tables)
        if self.coordinator is not None:
            self._listen_to_cluster(self.coordinator, self._logs)
        # Snapshots are expired only once the run deriver (and, on a shared store, the span
        # convergence) has read past them.
        required: tuple[str, ...] = (DERIVE_WATERMARK,) if self._deriver.enabled else ()
        if self.coordinator is not None:
            required += (CONVERGE_WATERMARK,)
        self.maintenance = Maintenance(
            self.store,
            self.metrics,
            retention=self.config.retention,
            compaction=self.config.compaction,
            storage=self.config.storage,
            required=required,
        )
        await asyncio.to_thread(self.maintenance.prepare)
        feed = await asyncio.to_thread(
            PriceFeed, self.config.prices, parts.prices, self._use_book(parts), self.metrics
        )
        self._pipeline = Pipeline(
            self._pool,
            by_signal,
            limits.admission(self._queue_bytes()),
            self.metrics,
            spans_gate=self.lag.admit if self.lag is not None else None,
        )
        primed = await self.store.acall(prime_table_stats)
        if primed:
            log.debug("primed statistics of %s", ", ".join(primed))
        self._describe_metrics()
        await self._start_receivers()
        self._flusher = asyncio.create_task(self._flush_key_usage())
        # The price book and FX rates are per node (each keeps what it fetched): every node
        # refreshes its own. The rest runs on one node of a cluster at a time.
        self._pricing = asyncio.create_task(feed.run_forever(self._stop_deriving))
        self._fx = asyncio.create_task(fx.run_forever(self._stop_deriving))
        leases = None
        if self.coordinator is not None:
            leases = Leases(self.coordinator, self.node, float(self.config.cluster.lease_s))
            log.info("node %s: background jobs under leases of %ss", self.node, leases.lease_s)
        self.keeper = Keeper(self._jobs(), leases)
        self._keeping = asyncio.create_task(self.keeper.run(self._stop_deriving))
        self._state = "ok"
        if self._grpc is not None:
            await self._grpc.set_serving(True)
        print_ready(self._out, self.config.storage.path, self.endpoints, self._first_keys)

    def _jobs(self) -> list[Job]:
        """The background work, each held by one node of a cluster at a time. Stopped in this
        order: runs are derived one last time before the consumers of runs step one last time."""
        assert self.maintenance is not None and self._logs is not None
        maintenance, evals, outbox = self.maintenance, self._logs, self.outbox

        async def maintain(fence: Fence | None, stop: asyncio.Event) -> None:
            await maintenance.run_forever(stop)

        async def evaluate(fence: Fence | None, stop: asyncio.Event) -> None:
            await evals.run(stop)  # a log still pending is evaluated by the next holder

        async def converge(fence: Fence | None, stop: asyncio.Event) -> None:
            await SpanConvergence(self.store).run_forever(stop)

        async def deliver(fence: Fence | None, stop: asyncio.Event) -> None:
            await outbox.run(stop)  # at stop, one more pass: what is due goes out first

        return [
            Job("maintenance", maintain),
            Job("evals", evaluate),
            Job("runs", self._derive),
            Job("run-consumers", self._follow),
            *([Job("spans-dedup", converge)] if self.coordinator is not None else []),
            # After everything that queues; what is still in flight at the drain's end stays
            # pending and is sent by the next holder (delivery is at least once).
            Job("outbox", deliver, grace_s=DRAIN_S),
        ]

    async def _derive(self, fence: Fence | None, stop: asyncio.Event) -> None:
        assert self._deriver is not None
        deriver = self._deriver
        await deriver.run_forever(stop)
        if self._state == "draining" and deriver.enabled:
            # One last bounded step, so what was just committed is also derived before exit.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(deriver.step)

    async def _follow(self, fence: Fence | None, stop: asyncio.Event) -> None:
        assert self._follower is not None
        follower = self._follower
        try:
            await follower.run_forever(stop)
            if self._state == "draining":
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(follower.step)
                await follower.after_commit()
        finally:
            await follower.aclose()

    def _listen_to_cluster(self, coordinator: Coordinator, evals: EvalsApi) -> None:
        """Other nodes' commits wake this node's change-feed loops; keys and workspace tokens
        created or revoked anywhere are reloaded here at once (the doc promises within 10 s)."""
        store, auth = self.store, self.auth

        def tell_others() -> None:
            coordinator.notify(KEYS_CHANNEL)

        def reload_keys(_: str | None) -> None:
            auth.load()
            evals.auth.load()

        auth.on_change = tell_others
        evals.auth.on_change = tell_others
        listener = Notifications(coordinator)
        listener.on(COMMITS_CHANNEL, lambda _: store.commits.fire())
        listener.on(KEYS_CHANNEL, reload_keys)
        listener.start()
        self._listener = listener

    def _run_consumers(self, fx: FxFeed) -> list[RunConsumer]:
        """The features fed by finished runs (alerts, ROI of traced runs, output rules on runs),
        each behind its own watermark; see `collector/runs/follow.py`."""
        consumers: list[RunConsumer] = []
        if self.config.roi.enabled:
            consumers.append(
                RoiRuns(self.config.roi, self.catalogue, fx.current, self.org_settings)
            )
        issues: list[ConfigIssue] = []
        rules = declared_rules(self.config.alerts, issues, registry.channel_checker(self.config))
        if issues:
            raise ConfigError(issues)
        send = registry.notification_sender(self.config)
        alerts = AlertsConsumer(
            self.store,
            self.config.alerts,
            outbox=self.outbox,
            declared=rules,
            send=send,
            box=self.box,
        )
        consumers.append(alerts)
        # Output rules on traced runs.
        consumers.append(LogRulesConsumer(RuleEngine(), self.outbox.kick))
        return consumers

    def _evals_api(self) -> EvalsApi:
        """Output evaluation as configured: judge, secrets, media, notification channels."""
        config = self.config
        return EvalsApi(
            self.store,
            self.auth,
            RuleEngine(),
            config=config.evals,
            box=self.box,
            policy=config.outbound,
            media_root=config.evals.media_root(config.storage.path),
            outbox=self.outbox,
            judge=Judge(config.judge, config.outbound),
            build_channel=lambda spec: registry.build_channel(
                spec, smtp=config.notifications.smtp, policy=config.outbound
            ),
            redactor=self.redactor,
            limiters=self._limiters,
            claims=self._claims,
        )

    def _use_book(self, parts: registry.Components) -> Callable[[], None]:
        """Who rebuilds from new prices: /v1/track pricing here, and every decode worker, each
        loading them from where the feed kept them."""

        def use() -> None:
            if self._roi is not None:
                self._roi.set_cost(registry.build_processor(parts, "cost"))
            if self._pool is not None:
                self._pool.reload()

        return use

    def _provision_keys(self) -> None:
        self.auth.load()
        if self.config.auth.bootstrap and not self.config.auth.orgs:
            # Only when the config declares no org (its orgs are the ones wanted), and before
            # anything else is written, which would make the store look used.
            # The keys are printed once, with the ready banner; never logged.
            self._first_keys = bootstrap_default_org(self.store, self.auth)
        for org in self.config.auth.orgs:
            ensure_org(self.store, org.name)
            for key in org.keys:
                self.auth.declare(org.name, key.scope, key.key, key.name)

    async def _start_receivers(self) -> None:
        assert self._pipeline is not None
        otlp = self.config.receivers.otlp
        consume = self._pipeline.consume
        retry = float(self.config.limits.retry_after_s)
        api_routes = self._api_routes()
        if otlp is not None and otlp.protocols.grpc is not None:
            g = otlp.protocols.grpc
            self._grpc = OtlpGrpcReceiver(
                consume, self.auth, g.endpoint, g.max_recv_msg_size_mib * MIB, retry
            )
            await self._grpc.start()
            self.endpoints.grpc = f"{split_endpoint(g.endpoint)[0]}:{self._grpc.port}"
        http_routes: list[BaseRoute] = []
        if otlp is not None and otlp.protocols.http is not None:
            h = otlp.protocols.http
            receiver = OtlpHttpReceiver(
                consume,
                self.auth,
                h.max_request_body_size_mib * MIB,
                retry,
                self._pipeline.admission,
            )
            http_routes += receiver.routes()
            if self.config.api.endpoint is None:
                http_routes += api_routes
            app: ASGIApp = self._app(http_routes + self._ops_routes())
            if h.cors.allowed_origins:  # browser SDKs exporting from these origins
                app = CORSMiddleware(
                    app,
                    allow_origins=h.cors.exact_origins(),
                    allow_origin_regex=h.cors.origin_pattern(),
                    allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
                    allow_headers=h.cors.allowed_headers,
                    max_age=h.cors.max_age,
                )
            self.endpoints.http = await self._listen(h.endpoint, app)
        if self.config.api.endpoint is not None:
            self.endpoints.api = await self._listen(
                self.config.api.endpoint, self._app(api_routes + self._ops_routes())
            )
        metrics = self.config.service.telemetry.metrics
        if metrics.level != "none" and metrics.listen_address() is not None:
            address = metrics.listen_address()
            assert address is not None
            page = Starlette(routes=[Route("/metrics", self._metrics_page)])
            self.endpoints.extra["metrics"] = await self._listen(address, page)
        for eid, check in self.config.health_checks().items():
            paths = dict.fromkeys([check.path, "/health"])  # the Collector's path, and ours
            health = functools.partial(self._health, body=check.response_body)
            routes = [Route(path, health) for path in paths]
            self.endpoints.extra[eid] = await self._listen(check.endpoint, Starlette(routes=routes))

    def _api_routes(self) -> list[BaseRoute]:
        """Every JSON route, through the one endpoint wrapper, their OpenAPI document, and the
        web UI (which writes alert changes through the same AlertsApi)."""
        alerts = AlertsApi(
            self.store,
            self.auth,
            check_channel=registry.channel_creation_check(self.config),
            box=self.box,
        )
        ops = self.operations(alerts)
        return [*routes(ops), openapi.route(ops, __version__), *self._ui_routes(alerts)]

    def operations(self, alerts: AlertsApi) -> list[Operation]:
        assert self._roi is not None
        # One budget of 300 read requests a minute per token, across the read APIs.
        limiter = self._limiters("read", 300, 60.0)
        return [
            *AdminApi(self.auth).operations(),
            *self.org_settings.operations(self.auth),
            *self._roi.operations(),
            *self.mcp.operations(),
            *McpReadApi(self.store, self.auth, limiter=limiter).operations(),
            *(self.maintenance.operations(self.auth) if self.maintenance is not None else []),
            *alerts.operations(),
            *(self._logs.operations() if self._logs is not None else []),
            *ReadApi(
                self.store, self.auth, limiter=limiter, org_settings=self.org_settings
            ).operations(),
        ]

    def _ui_routes(self, alerts: AlertsApi) -> list[BaseRoute]:
        """The web UI under /ui/ and / redirecting there (collector/ui/), unless `ui.enabled`
        is off."""
        if not self.config.ui.enabled or self._logs is None:
            return []
        ui = UiApp(
            store=self.store,
            auth=self.auth,
            logs=self._logs,
            alerts=alerts,
            config=self.config.ui,
            box=self.box,
        )
        return ui.routes()

    def _ops_routes(self) -> list[BaseRoute]:
        served: list[BaseRoute] = [Route("/health", self._health)]
        metrics = self.config.service.telemetry.metrics
        if metrics.level != "none" and metrics.listen_address() is None:
            served.append(Route("/metrics", self._metrics_page))
        return served

    @staticmethod
    def _app(served: list[BaseRoute]) -> Starlette:
        app = Starlette(routes=served)
        # An unknown path answers in its API's JSON error shape, not Starlette's plain text.
        app.router.default = NotFound(ALL_APIS)
        return app

    async def _listen(self, endpoint: str, app: ASGIApp) -> str:
        listener = await listen(endpoint, app)
        self._listeners.append(listener)
        return listener.address

    def _queue_bytes(self) -> int:
        """What waiting requests may hold: memory_limiter's soft limit when a pipeline lists it,
        else `limits.max_queue_mib`."""
        if self._limiter is not None:
            return self._limiter.queue_bytes(total_memory())
        return self.config.limits.max_queue_mib * MIB

    # -- ops routes ------------------------------------------------------------------------

    async def _health(self, request: Request, body: Mapping[str, str] | None = None) -> Response:
        """200 while the service is up and accepts data; 503 while it starts, drains or stops,
        or refuses new data (a full store, failing commits, derivation past its lag bound:
        `reason` says why); `body` is a health_check extension's `response_body` (text for
        `healthy` / `unhealthy`)."""
        refusing = self._refusing() if self._state == "ok" else None
        ok = self._state == "ok" and refusing is None
        if body is not None and ("healthy" if ok else "unhealthy") in body:
            text = body["healthy" if ok else "unhealthy"]
            return PlainTextResponse(text, status_code=200 if ok else 503)
        answer: dict[str, object] = {"status": self._state}
        if refusing is not None:
            answer = {"status": "refusing", "reason": refusing}
        if self.coordinator is not None:  # one node of many: which, and what it runs
            answer["node"] = self.node
            answer["jobs"] = self.keeper.held() if self.keeper is not None else []
        return JSONResponse(answer, status_code=200 if ok else 503)

    def _refusing(self) -> str | None:
        """Why new data is refused right now (a full store, failing commits, run derivation
        past its lag bound), if it is."""
        if self.maintenance is not None and self.maintenance.cap.state.full:
            return "the store is over storage.max_size_mib: new data is refused"
        stats = self.store.stats
        if stats.failing_since is not None:
            return f"the store cannot commit ({stats.last_failure}): new data is refused"
        if self.lag is not None and self.lag.over() is not None:
            return (
                f"run derivation is {self.lag.seconds():.0f} s behind ingest, past "
                f"processors.runs.max_lag_s ({self.lag.max_lag_s:g}): new spans are refused"
            )
        return None

    async def _metrics_page(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    def _count_redaction(self, rule: str, n: int) -> None:
        self.metrics.inc("agentledger_redactions_total", n, rule=rule)

    def _describe_metrics(self) -> None:
        m, st = self.metrics, self.store.stats
        m.describe("agentledger_redactions_total", "counter", "values redacted, by rule")
        m.collector(self.outbox.metric_lines)
        for exporter in self._exporters.values():
            lines = getattr(exporter, "metric_lines", None)
            if callable(lines):  # forward exporters: queue depth, sent, dropped
                m.collector(lines)
        for name, text in (
            ("agentledger_items_received_total", "spans, log records and points received"),
            ("agentledger_items_accepted_total", "items committed to the store"),
            ("agentledger_items_deduplicated_total", "re-sent spans already stored"),
            ("agentledger_items_rejected_total", "items refused (partial success)"),
            ("agentledger_requests_refused_total", "requests refused for backpressure"),
        ):
            m.describe(name, "counter", text)
        m.counter("agentledger_store_commits_total", "group commits", lambda: float(st.commits))
        m.counter(
            "agentledger_store_commit_failures_total",
            "failed commits",
            lambda: float(st.commit_failures),
        )
        m.counter(
            "agentledger_store_commit_conflicts_total",
            "commits refused for a concurrent commit of another node, and retried",
            lambda: float(st.commit_conflicts),
        )
        if self.coordinator is not None:
            m.collector(self._cluster_metric_lines)
        m.gauge(
            "agentledger_store_size_bytes",
            "bytes of catalog and data files",
            lambda: float(self.store.size_bytes()),
        )
        if self.lag is not None and self._deriver is not None:
            self._describe_derivation(self.lag, self._deriver.stats)
        m.histogram(
            "agentledger_commit_duration_seconds",
            "time to commit a group",
            lambda: (dict(st.commit_latency_buckets), st.commit_seconds_total, st.commits),
        )

    def _describe_derivation(self, lag: DerivationLag, stats: DeriveStats) -> None:
        m = self.metrics
        m.gauge(
            "agentledger_derivation_lag_seconds",
            "age of the oldest committed span not derived into runs yet",
            lag.seconds,
        )
        m.gauge(
            "agentledger_derivation_lag_spans",
            "spans committed and not derived into runs yet",
            lambda: float(lag.spans()),
        )
        m.counter(
            "agentledger_ingest_paced_total",
            "requests of spans that waited for derivation (processors.runs.pace_lag_s)",
            lambda: float(lag.paced),
        )
        m.counter(
            "agentledger_ingest_paced_seconds_total",
            "seconds requests of spans waited for derivation in all",
            lambda: lag.paced_s,
        )
        m.counter(
            "agentledger_derivation_traces_new_total",
            "traces derived when seen for the first time",
            lambda: float(stats.traces_new),
        )
        m.counter(
            "agentledger_derivation_traces_read_back_total",
            "traces re-derived from spans read back from the store",
            lambda: float(stats.traces_stored),
        )
        m.counter(
            "agentledger_derivation_spans_read_back_total",
            "stored spans read back to re-derive their traces",
            lambda: float(stats.spans_read_back),
        )
        m.counter(
            "agentledger_derivation_steps_total",
            "derivation steps that derived something",
            lambda: float(stats.steps),
        )
        m.counter(
            "agentledger_derivation_looks_total",
            "derivation steps finished, also those that found nothing to derive",
            lambda: float(stats.looks),
        )
        m.counter(
            "agentledger_derivation_interrupted_total",
            "derivation queries interrupted past their time bound (the step is retried)",
            lambda: float(stats.interrupted),
        )
        for phase, text in (
            ("read", "reading changes and stored spans"),
            ("assemble", "assembling runs in a worker (waiting for one included)"),
            ("commit", "committing on the writer thread (waiting for it included)"),
        ):
            m.counter(
                f"agentledger_derivation_{phase}_seconds_total",
                f"seconds derivation steps spent {text}",
                functools.partial(getattr, stats, f"{phase}_s"),
            )

    def _cluster_metric_lines(self) -> list[str]:
        """This node's leases: which jobs it runs (1) or not (0), and lease changes."""
        keeper = self.keeper
        if keeper is None:
            return []
        node = f'node="{_label(self.node)}"'
        held = set(keeper.held())
        lines = ["# HELP agentledger_job_held 1 for each background job this node runs now"]
        lines.append("# TYPE agentledger_job_held gauge")
        lines += [
            f'agentledger_job_held{{{node},job="{job}"}} {int(job in held)}' for job in keeper.jobs
        ]
        for name, text, value in (
            ("agentledger_leases_acquired_total", "leases this node took", keeper.stats.acquired),
            (
                "agentledger_leases_lost_total",
                "leases taken over by another node",
                keeper.stats.lost,
            ),
            (
                "agentledger_lease_renew_failures_total",
                "lease rounds that could not reach PostgreSQL",
                keeper.stats.renew_failures,
            ),
        ):
            lines += [
                f"# HELP {name} {text}",
                f"# TYPE {name} counter",
                f"{name}{{{node}}} {value}",
            ]
        return lines

    # -- stop ------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop accepting, answer what is in flight, commit it, close. Safe twice."""
        if self._state == "stopped":
            return
        self._state = "draining"
        if self._grpc is not None:
            await self._grpc.set_serving(False)
            await self._grpc.stop(grace_s=30)
        for listener in self._listeners:
            listener.server.should_exit = True  # all stop accepting at once, then drain
        for listener in self._listeners:
            await listener.task
        self._listeners.clear()
        if self._pipeline is not None:
            await self._pipeline.drain()
        for exporter in reversed(list(self._exporters.values())):
            await exporter.shutdown()
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown)
        if self._flusher is not None:
            self._flusher.cancel()
        # Every job stops at its next bounded slice (a step in progress commits or leaves its
        # watermark as it was), in the order of `_jobs`, and hands its lease back.
        self._stop_deriving.set()
        if self._keeping is not None:
            await self._keeping
        if self._logs is not None:
            await self._logs.stop()  # pending logs stay pending: evaluated on the next start
        for refresh in (self._pricing, self._fx):
            if refresh is not None:
                refresh.cancel()  # a fetch in progress is dropped; what was kept stays
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.auth.flush_last_used)
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        await asyncio.to_thread(self.store.close)
        if self.coordinator is not None:
            self.coordinator.close()
        self._state = "stopped"
        log.info("stopped")

    async def _flush_key_usage(self) -> None:
        while True:
            await asyncio.sleep(60)
            try:
                await asyncio.to_thread(self.auth.flush_last_used)
            except Exception:
                log.exception("could not record key usage")

    # -- what the user sees ----------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


async def run(config: Config, out: TextIO, stop: asyncio.Event) -> None:
    service = Service(config, out)
    try:
        await service.start()
        await stop.wait()
    finally:
        await service.stop()
