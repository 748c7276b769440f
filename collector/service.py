"""The service lifecycle: open the store, start exporters, decoders and listeners; drain and stop.

`agentledger serve` builds one `Service` from a `Config` and runs it until SIGTERM/SIGINT.
Start order is store → exporters → pipeline → receivers; stop runs in reverse, draining each.
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
from collector.api.ratelimit import SlidingWindowLimiter
from collector.api.routes import NotFound, Operation, routes
from collector.api.server import Listener, listen
from collector.auth.api import AdminApi
from collector.auth.keys import Authenticator, bootstrap_default_org, ensure_org
from collector.banner import Endpoints, print_ready
from collector.config import Config
from collector.configparse import ConfigError, ConfigIssue, split_endpoint
from collector.evals.api import EvalsApi
from collector.evals.judge import Judge
from collector.evals.runs import LogRulesConsumer
from collector.governance.maintenance import Maintenance
from collector.mcp.api import McpApi
from collector.mcp.read_api import McpReadApi
from collector.model import Exporter, Scope
from collector.outbound.outbox import Outbox
from collector.pipeline import DecodePool, Limits, Pipeline, total_memory
from collector.prices.book import PriceBook
from collector.prices.feed import PriceFeed
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
        self.metrics = Metrics()
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
        self._deriving: asyncio.Task[None] | None = None
        self._follower: RunFollower | None = None
        self._following: asyncio.Task[None] | None = None
        self._pricing: asyncio.Task[None] | None = None
        self._logs: EvalsApi | None = None  # /api/logs: output evaluation
        self.maintenance: Maintenance | None = None  # retention, compaction, disk cap
        self._maintaining: asyncio.Task[None] | None = None

    # -- start -----------------------------------------------------------------------------

    async def start(self) -> None:
        parts = self._parts
        await asyncio.to_thread(self.store.open)
        await asyncio.to_thread(self.outbox.create_tables)
        await asyncio.to_thread(self._provision_keys)
        await asyncio.to_thread(self.mcp.create_tables)

        self._exporters, by_signal = registry.build_exporters(parts, self.store)
        for exporter in self._exporters.values():
            await exporter.start()
        limits = self.config.limits
        self._pool = DecodePool(limits.decode_workers, registry.processor_factory(parts))
        await asyncio.to_thread(self._pool.start)
        runs = RunsProcessor(registry.runs_config(parts))
        if runs.config.enabled:
            # Spans committed and not derived yet: /metrics, /health, and ingest admission.
            self.lag = DerivationLag(runs.config.max_lag_s)
            self.store.spans_committed = self.lag.committed
        self._deriver = RunDeriver(self.store, runs, offload=self._pool.call, lag=self.lag)
        await asyncio.to_thread(self._deriver.create_tables)
        self._follower = RunFollower(self.store, self._run_consumers())
        await asyncio.to_thread(self._follower.create_tables)
        await asyncio.to_thread(create_views, self.store)
        self._roi = RoiApi(
            self.store,
            self.auth,
            self.catalogue,
            registry.build_processor(parts, "cost"),
            redactor=self.redactor,
        )
        await asyncio.to_thread(self._roi.create_tables)
        self._logs = self._evals_api()
        await asyncio.to_thread(self._logs.create_tables)
        # Snapshots are expired only once the run deriver has read past them.
        required = (DERIVE_WATERMARK,) if self._deriver.enabled else ()
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
            Limits(limits.max_queue_items, self._queue_bytes(), float(limits.retry_after_s)),
            self.metrics,
            spans_gate=self.lag.check if self.lag is not None else None,
        )
        primed = await self.store.acall(prime_table_stats)
        if primed:
            log.debug("primed statistics of %s", ", ".join(primed))
        self._describe_metrics()
        await self._start_receivers()
        self._flusher = asyncio.create_task(self._flush_key_usage())
        await self._logs.start()
        await self.outbox.start()
        self._pricing = asyncio.create_task(feed.run_forever(self._stop_deriving))
        self._deriving = asyncio.create_task(self._deriver.run_forever(self._stop_deriving))
        self._following = asyncio.create_task(self._follower.run_forever(self._stop_deriving))
        self._maintaining = asyncio.create_task(self.maintenance.run_forever(self._stop_deriving))
        self._state = "ok"
        if self._grpc is not None:
            await self._grpc.set_serving(True)
        print_ready(self._out, self.config.storage.path, self.endpoints, self._first_keys)

    def _run_consumers(self) -> list[RunConsumer]:
        """The features fed by finished runs (alerts, ROI of traced runs, output rules on runs),
        each behind its own watermark; see `collector/runs/follow.py`."""
        consumers: list[RunConsumer] = []
        if self.config.roi.enabled:
            consumers.append(RoiRuns(self.config.roi, self.catalogue))
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
        )

    def _use_book(self, parts: registry.Components) -> Callable[[PriceBook], None]:
        """What a new price book is handed to: /v1/track pricing here, and every decode worker
        (which loads it from where the feed kept it)."""

        def use(book: PriceBook) -> None:
            if self._roi is not None:
                self._roi.set_cost(registry.build_processor(parts, "cost", book))
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
                consume, self.auth, h.max_request_body_size_mib * MIB, retry
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
            self.store, self.auth, check_channel=registry.channel_checker(self.config), box=self.box
        )
        ops = self.operations(alerts)
        return [*routes(ops), openapi.route(ops, __version__), *self._ui_routes(alerts)]

    def operations(self, alerts: AlertsApi) -> list[Operation]:
        assert self._roi is not None
        # One budget of 300 read requests a minute per token, across the read APIs.
        limiter = SlidingWindowLimiter(300, 60.0)
        return [
            *AdminApi(self.auth).operations(),
            *self._roi.operations(),
            *self.mcp.operations(),
            *McpReadApi(self.store, self.auth, limiter=limiter).operations(),
            *(self.maintenance.operations(self.auth) if self.maintenance is not None else []),
            *alerts.operations(),
            *(self._logs.operations() if self._logs is not None else []),
            *ReadApi(self.store, self.auth, limiter=limiter).operations(),
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
        or refuses new spans (derivation past its lag bound: `reason` says so); `body` is a
        health_check extension's `response_body` (text for `healthy` / `unhealthy`)."""
        refusing = self._refusing() if self._state == "ok" else None
        ok = self._state == "ok" and refusing is None
        if body is not None and ("healthy" if ok else "unhealthy") in body:
            text = body["healthy" if ok else "unhealthy"]
            return PlainTextResponse(text, status_code=200 if ok else 503)
        if refusing is not None:
            return JSONResponse({"status": "refusing", "reason": refusing}, status_code=503)
        return JSONResponse({"status": self._state}, status_code=200 if ok else 503)

    def _refusing(self) -> str | None:
        """Why new data is refused right now, if it is."""
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
            "agentledger_derivation_traces_new_total",
            "traces derived from the change feed alone (seen for the first time)",
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
        if self._logs is not None:
            await self._logs.stop()  # pending logs stay pending: evaluated on the next start
        if self._pricing is not None:
            self._pricing.cancel()  # a fetch in progress is dropped; the kept book stays
        self._stop_deriving.set()
        if self._maintaining is not None:
            await self._maintaining  # a job in progress stops at its next bounded slice
        if self._deriving is not None:
            await self._deriving  # a step in progress commits or leaves the watermark as it was
            # One last bounded step, so what was just committed is also derived before exit.
            if self._deriver is not None and self._deriver.enabled:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self._deriver.step)
        if self._following is not None:
            await self._following
            if self._follower is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self._follower.step)
                await self._follower.after_commit()
                await self._follower.aclose()
        await self.outbox.stop()  # after everything that queues: what is due goes out first
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.auth.flush_last_used)
        await asyncio.to_thread(self.store.close)
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


async def run(config: Config, out: TextIO, stop: asyncio.Event) -> None:
    service = Service(config, out)
    try:
        await service.start()
        await stop.wait()
    finally:
        await service.stop()
