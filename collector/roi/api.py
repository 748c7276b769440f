"""The ROI API (the Triad track API doc): POST /v1/track, task types, settings, events, reports.

Ingest keys track events (written through the store's group commit, answered once durable);
admin keys read and patch the org's ROI settings (keys of its per-org settings,
`collector/auth/settings.py`); read tokens list events and reports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute

from collector.api import params as pm
from collector.api import schema as sc
from collector.api import shapes as js
from collector.api.apis import ROI
from collector.api.params import Params, decode_cursor, encode_cursor
from collector.api.ratelimit import Limiter, LimiterFactory, local_limiters
from collector.api.routes import Call, Keys, Operation, PerKey, routes
from collector.auth.keys import Authenticator
from collector.auth.settings import PerOrgSettings, body_schema, checked_patch
from collector.cluster.claims import Claims
from collector.errors import ApiError
from collector.model import Principal, Processor
from collector.prices.fx import FxTable, shipped_only
from collector.roi import reports as roi_reports
from collector.roi import store as roi_store
from collector.roi.compute import Pricer, UnknownTaskType, compute, processor_pricer, resolve_cost
from collector.roi.guard import EventIds, KeyLocks, MonthlyQuota, RecentIdempotencyKeys
from collector.roi.request import OUTCOMES, TRACK_BODY, TrackRequest, parse_track
from collector.roi.settings import OrgSettings, parse_settings, settings_group
from collector.roi.shapes import event_json, event_record, response_body, task_types_body
from collector.roi.tasktypes import Catalogue
from collector.store.writer import Store
from processors.redact.rules import Redactor

log = logging.getLogger(__name__)
PAST, FUTURE = timedelta(days=90), timedelta(hours=24)
SORT = "occurred_at_desc"


def _no_price(
    org: str, model: str, tin: int | None, tout: int | None, at: datetime
) -> tuple[None, None]:
    return None, None


class RoiApi:
    def __init__(
        self,
        store: Store,
        auth: Authenticator,
        catalogue: Catalogue,
        cost: Processor | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        redactor: Redactor | None = None,
        fx: Callable[[], FxTable] | None = None,
        org_settings: PerOrgSettings | None = None,
        limiters: LimiterFactory = local_limiters,
        claims: Claims | None = None,
    ) -> None:
        """`fx` gives the reference FX table in use (default: the shipped one); `org_settings`
        every org's settings as the service holds them (the config file's layer included; by
        default the store's alone, checked by the ROI keys' group); `limiters` and `claims` are
        a shared store's (global rate limits, Idempotency-Keys claimed across nodes), by
        default this process's own."""
        self._store = store
        self._group = settings_group(catalogue)  # the ROI keys of the org's settings
        self._org_settings = org_settings or PerOrgSettings(store, [self._group])
        self._limiters = limiters
        self._claims = claims
        self._redactor = redactor
        self._auth = auth
        self._catalogue = catalogue
        self._price: Pricer = processor_pricer(cost) if cost is not None else _no_price
        self._fx = fx or shipped_only()
        self._clock = clock
        # The settings parsed from each org's document, while that document is the one in force.
        self._settings: dict[str, tuple[dict[str, Any], OrgSettings]] = {}
        self._ingest_limiters: dict[int, Limiter] = {}
        self._read_limiter = limiters("roi-read", 300, 60.0)
        self._ids = EventIds()
        self._locks = KeyLocks()
        self._recent = RecentIdempotencyKeys()
        self._quota = MonthlyQuota(lambda org, t: roi_store.count_since(store, org, t))

    def set_cost(self, cost: Processor | None) -> None:
        """Price from now on with `cost` (a new price book swapped in by the service)."""
        self._price = processor_pricer(cost) if cost is not None else _no_price

    def create_tables(self) -> None:
        """Create `roi_events` and the `idempotency_keys` view; load the last 24 h of keys."""
        roi_store.create_tables(self._store)
        now = self._clock()
        self._recent.load(roi_store.recent_keys(self._store, now, 200_000), now)

    def routes(self) -> list[BaseRoute]:
        return routes(self.operations())

    def operations(self) -> list[Operation]:
        read = Keys(self._auth, ("read",))
        admin = Keys(self._auth, ("admin",))
        limit = PerKey(self._read_limiter, "More than 300 requests a minute")

        def get(path: str, handler: Any, summary: str, *params: pm.Param) -> Operation:
            return Operation(
                ROI,
                "GET",
                path,
                lambda call: handler(call.caller, call.query, call.path),
                summary,
                read,
                params=params,
                limit=limit,
                blocking=True,
                clock=self._clock,
            )

        filters = (
            pm.FROM,
            pm.TO,
            pm.strings("agent_id"),
            pm.strings("task_type"),
            pm.strings("outcome", allowed=OUTCOMES),
            pm.strings("model"),
            pm.Param("trace_id", sc.string(64)),
            pm.Param("run_id", sc.string(255)),
        )
        return [
            Operation(
                ROI,
                "POST",
                "/v1/track",
                self._track,
                "Record one agent task; answers the event with hours, cost and net saved",
                Keys(self._auth, ("ingest",)),
                params=(
                    pm.Param("Idempotency-Key", sc.string(255, min_length=1), where="header"),
                    pm.Param("traceparent", sc.string(55), where="header"),
                ),
                body=TRACK_BODY,
                ok=201,
                limit=_TrackLimit(self),
                errors={429: "rate_limited (per key and second) or quota_exceeded (monthly)"},
                clock=self._clock,
            ),
            Operation(
                ROI,
                "GET",
                "/v1/task-types",
                self._task_types,
                "The task-type catalogue with the org's baselines (any key of the org)",
                Keys(self._auth, ("read", "ingest", "admin")),
            ),
            Operation(
                ROI,
                "GET",
                "/v1/settings",
                self._get_settings,
                "The org's ROI settings",
                admin,
            ),
            Operation(
                ROI,
                "PATCH",
                "/v1/settings",
                self._patch_settings,
                "Change the org's ROI settings (JSON merge patch: null hands a key back to the "
                "config file or the default)",
                admin,
                body=body_schema([self._group]),
                parse=checked_patch([self._group]),
            ),
            get(
                "/v1/events",
                self._events,
                "Tracked events, newest first",
                *filters,
                pm.CURSOR,
                pm.limit(maximum=500),
            ),
            get("/v1/events/{event_id}", self._event, "One tracked event"),
            get(
                "/v1/reports",
                self._reports,
                "Hours and money saved over time, optionally grouped",
                *filters,
                pm.INTERVAL,
                pm.Param("group_by", sc.string(200), "a column or metadata.<key>"),
            ),
        ]

    # -- track -----------------------------------------------------------------------------

    async def _track(self, call: Call) -> Response:
        principal: Principal = call.caller
        settings = await self.settings_for(principal.org)
        req = parse_track(call.body, call.header("traceparent"))
        req = self._redacted(req)
        key = call.header("idempotency-key")
        now = self._clock()
        if req.occurred_at is not None and not now - PAST <= req.occurred_at <= now + FUTURE:
            raise ApiError(
                422,
                "occurred_at_out_of_range",
                "occurred_at is more than 90 days old or more than 24 h in the future",
                [{"field": "occurred_at", "message": "must be within [now-90d, now+24h]"}],
            )
        if key is None:
            return await self._record(principal, settings, req, None, now)
        async with self._locks.hold((principal.org, key)):
            replay = await self._replay(principal.org, key, self._clock())
            if replay is None and self._claims is not None:
                return await self._record_claimed(principal, settings, req, key)
            if replay is not None:
                return _replayed(replay)
            return await self._record(principal, settings, req, key, self._clock())

    async def _record_claimed(
        self, principal: Principal, settings: OrgSettings, req: TrackRequest, key: str
    ) -> Response:
        """On a shared store: record the event if this node wins the key's claim, else answer
        with the event another node recorded under it."""
        assert self._claims is not None
        org = principal.org
        if await self._claims.claim("track", org, key):
            try:
                response = await self._record(principal, settings, req, key, self._clock())
            except BaseException:
                await self._claims.release("track", org, key)
                raise
            await self._claims.finish("track", org, key)
            return response
        # This node's memory of recent keys knows nothing of another node's: ask the store.
        replay = await self._claims.wait_for(lambda: self._stored(org, key))
        if replay is None:
            raise ApiError(
                409,
                "idempotency_in_progress",
                "A request with this Idempotency-Key is still being recorded; retry shortly",
                headers={"Retry-After": "1"},
            )
        return _replayed(replay)

    def _redacted(self, req: TrackRequest) -> TrackRequest:
        """The audit sample and metadata as the `redact:` rules leave them, before storing."""
        r = self._redactor
        if r is None or (req.audit_sample is None and req.metadata is None):
            return req
        audit, meta = req.audit_sample, req.metadata
        return dataclasses.replace(
            req,
            audit_sample=None if audit is None else r.value(audit, field="audit_sample"),
            metadata=None if meta is None else r.value(meta, field="metadata"),
        )

    async def rate_check(self, key_id: str, limit: int) -> None:
        limiter = self._ingest_limiters.get(limit)
        if limiter is None:
            limiter = self._ingest_limiters[limit] = self._limiters("track", limit, 1.0)
        if await limiter.admit(key_id) is not None:
            raise ApiError(
                429,
                "rate_limited",
                f"More than {limit} requests a second for this API key",
                headers={"Retry-After": "1"},
            )

    async def _replay(self, org: str, key: str, now: datetime) -> bytes | None:
        may_exist, response = self._recent.get((org, key), now)
        if response is None and may_exist:
            response = await asyncio.to_thread(
                roi_store.stored_response, self._store, org, key, now
            )
        return None if response is None else response.encode()

    async def _stored(self, org: str, key: str) -> bytes | None:
        found = await asyncio.to_thread(
            roi_store.stored_response, self._store, org, key, self._clock()
        )
        return None if found is None else found.encode()

    async def _record(
        self,
        principal: Principal,
        settings: OrgSettings,
        req: TrackRequest,
        key: str | None,
        now: datetime,
    ) -> Response:
        org = principal.org
        occurred = req.occurred_at or now
        try:
            # Priced as of when the task occurred, not when it was reported.
            cost = resolve_cost(req, settings, org, self._price, at=occurred, fx=self._fx())
            s = compute(req, settings, self._catalogue, cost)
        except UnknownTaskType as e:
            raise ApiError(
                422,
                "unknown_task_type",
                f"task_type {req.task_type!r} is not in the catalogue and no "
                "human_baseline_minutes was given",
                [{"field": "task_type", "message": "unknown task type"}],
            ) from e
        event_id = self._ids.new()
        text = json.dumps(response_body(event_id, req, s, occurred))
        if not await self._quota.reserve(org, settings.monthly_cap, now):
            raise ApiError(
                429,
                "quota_exceeded",
                f"The {settings.plan} plan's {settings.monthly_cap} events this month are used",
                headers={"Retry-After": str(_seconds_to_next_month(now))},
            )
        record = event_record(
            event_id,
            req,
            s,
            occurred=occurred,
            now=now,
            key_id=principal.key_id,
            key=key,
            response=text,
        )
        try:
            await self._store.append(roi_store.event_rows(org, record))
        except BaseException:
            self._quota.release(org, now)
            raise
        if key is not None:
            self._recent.add((org, key), text, now)
        return Response(text, 201, media_type="application/json")

    # -- task types and settings -----------------------------------------------------------

    async def _task_types(self, call: Call) -> dict[str, Any]:
        settings = await self.settings_for(call.org)
        return task_types_body(self._catalogue, settings)

    async def _get_settings(self, call: Call) -> dict[str, Any]:
        settings = await self.settings_for(call.org, fresh=True)
        return settings.public()

    async def _patch_settings(self, call: Call) -> dict[str, Any]:
        document = await self._org_settings.patch(call.org, call.body)
        return self._parsed(call.org, document).public()

    async def settings_for(self, org: str, fresh: bool = False) -> OrgSettings:
        """`org`'s ROI settings in force (cached per node; another node's change shows here
        within the per-org settings' TTL)."""
        return self._parsed(org, await self._org_settings.document(org, fresh))

    def _parsed(self, org: str, document: dict[str, Any]) -> OrgSettings:
        cached = self._settings.get(org)
        if cached is not None and cached[0] is document:
            return cached[1]
        settings, problems = parse_settings(document, self._catalogue)
        if problems:  # written by hand or by an older version: say so, keep serving
            log.warning("org %s has invalid ROI settings: %s", org, problems)
        self._settings[org] = (document, settings)
        return settings

    def _filter(self, p: Principal, q: Params) -> roi_store.RoiEventFilter:
        window = q.window()
        metadata = []
        for name, value in q.query.multi_items():
            if name.startswith("metadata."):
                group = roi_reports.GroupBy.parse(name)
                if group is None or group.metadata_key is None:
                    q.problem(name, "metadata keys are letters, digits, _ and -")
                else:
                    metadata.append((roi_reports.metadata_path(group.metadata_key), value))
        return roi_store.RoiEventFilter(
            org=p.org,
            start=window.start,
            end=window.end,
            agent_ids=q.strings("agent_id"),
            task_types=q.strings("task_type"),
            outcomes=q.strings("outcome", OUTCOMES),
            models=q.strings("model"),
            trace_id=q.query.get("trace_id") or None,
            run_id=q.query.get("run_id") or None,
            metadata=tuple(metadata),
        )

    def _events(self, p: Principal, q: Params, _: dict[str, str]) -> dict[str, Any]:
        f = self._filter(p, q)
        limit = q.limit(default=50, maximum=500)
        after = decode_cursor(q, SORT, "BIGINT")
        q.raise_if_invalid()
        position = None if after is None else (int(after[0]), after[1])
        page, nxt = roi_store.list_events(self._store, f, position, limit)
        return {
            "events": [event_json(e) for e in page],
            "next_cursor": None if nxt is None else encode_cursor(SORT, nxt[0], nxt[1]),
        }

    def _event(self, p: Principal, q: Params, path: dict[str, str]) -> dict[str, Any]:
        found = roi_store.get_event(self._store, p.org, str(path["event_id"]))
        if found is None:
            raise ApiError(404, "not_found", "Event not found")
        return event_json(found)

    def _reports(self, p: Principal, q: Params, _: dict[str, str]) -> dict[str, Any]:
        f = self._filter(p, q)
        raw_group = q.query.get("group_by") or None
        group = roi_reports.GroupBy.parse(raw_group) if raw_group else None
        if raw_group and group is None:
            allowed = ", ".join(roi_reports.GROUP_COLUMNS)
            q.problem("group_by", f"must be one of {allowed} or metadata.<key>")
        window = q.window()
        label, width = q.interval(window)
        q.raise_if_invalid()
        body = roi_reports.report(self._store, f, group, width)
        head = {"from": js.iso(f.start), "to": js.iso(f.end), "interval": label}
        return {**head, "group_by": raw_group, **body}


class _TrackLimit:
    """The per-key, per-second cap of the org's plan (its settings say which)."""

    def __init__(self, api: RoiApi) -> None:
        self._api = api

    async def check(self, caller: Any) -> None:
        settings = await self._api.settings_for(caller.org)
        await self._api.rate_check(caller.key_id, settings.rate_limit)


def _replayed(body: bytes) -> Response:
    return Response(
        body, 201, media_type="application/json", headers={"Idempotent-Replayed": "true"}
    )


def _seconds_to_next_month(now: datetime) -> int:
    nxt = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=32)
    return max(1, int((nxt.replace(day=1) - now).total_seconds()))
