"""Admin HTTP API of alert rules (`/api/alert-rules`: create, list, get, update, delete,
enable, disable) and manual resolution of alert events (`PATCH /api/alert-events/{id}`).

Admin keys of the org only; bodies are checked with the engine's rule dataclass through the
config parser (`collector/configparse.py`); records go to `collector/alerts/store.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import duckdb
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from collector.alerts import store as st
from collector.api import schema as sc
from collector.api.apis import ADMIN
from collector.api.routes import Call, Keys, Operation, routes
from collector.api.shapes import iso
from collector.auth.keys import Authenticator
from collector.configparse import ConfigIssue, parse_dataclass
from collector.errors import ApiError
from collector.secretbox import SecretBox
from collector.store.lake import LAKE
from collector.store.writer import Store
from processors.alerts.rules import AlertRuleSpec

ChannelCheck = Callable[[Mapping[str, Any]], Awaitable[None]]
"""Raises ValueError with a reason when a channel spec cannot be used (e.g. a URL whose host is
or resolves to an address the outbound guard refuses), as the rule is created or changed."""
MAX_RULES_PER_ORG = 500
READ_ONLY = frozenset({"id", "source", "created_at", "updated_at"})
RULE_BODY = sc.obj(
    {"name": sc.string(200), "enabled": sc.boolean(), "channels": sc.array(sc.obj({}))},
    description="An alert rule as docs/alerts.md describes it (metric, threshold, window_s, "
    "channels, ...); every field is checked against the rule's definition.",
)
RULE = sc.obj({"id": sc.string(), "name": sc.string(), "source": sc.string()}, ["id", "name"])


class AlertsApi:
    def __init__(
        self,
        store: Store,
        auth: Authenticator,
        *,
        check_channel: ChannelCheck | None = None,
        box: SecretBox | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._auth = auth
        self._check_channel = check_channel
        self._box = box
        self._clock = clock

    def routes(self) -> list[BaseRoute]:
        return routes(self.operations())

    def operations(self) -> list[Operation]:
        admin = Keys(self._auth, ("admin",))
        one = "/api/alert-rules/{rule_id}"

        def op(method: str, path: str, handler: Any, summary: str, **more: Any) -> Operation:
            return Operation(
                ADMIN, method, path, handler, summary, admin, clock=self._clock, **more
            )

        return [
            op("POST", "/api/alert-rules", self._create, "Create an alert rule",
               body=RULE_BODY, ok=201, response=RULE, errors={409: "name taken or too many"}),
            op("GET", "/api/alert-rules", self._list, "The org's alert rules",
               response=sc.obj({"alert_rules": sc.array(RULE)}, ["alert_rules"])),
            op("GET", one, self._get, "One alert rule", response=RULE),
            op("PATCH", one, self._update, "Change fields of an alert rule", body=RULE_BODY,
               response=RULE, errors={409: "declared in the config file, or name taken"}),
            op("PUT", one, self._update, "Replace an alert rule", body=RULE_BODY,
               response=RULE, errors={409: "declared in the config file, or name taken"}),
            op("DELETE", one, self._delete, "Delete an alert rule (its open events end)",
               ok=204, media="", errors={409: "declared in the config file"}),
            op("POST", one + "/enable", self._enable, "Enable an alert rule", response=RULE),
            op("POST", one + "/disable", self._disable, "Disable an alert rule", response=RULE),
            op("PATCH", "/api/alert-events/{event_id}", self._resolve,
               "Resolve an alert event by hand",
               body=sc.obj({"resolved": sc.const(True)}, extra=False), body_required=False),
        ]  # fmt: skip

    # -- rules -----------------------------------------------------------------------------

    async def _create(self, call: Call) -> Response:
        p, spec = call.caller, await self._parse(call.body)

        def write(cur: duckdb.DuckDBPyConnection) -> st.RuleRecord:
            if st.rule_by_name(cur, p.org, spec["name"]) is not None:
                raise _name_taken(spec["name"])
            if len(st.load_rules(cur, p.org)) >= MAX_RULES_PER_ORG:
                raise ApiError(409, "too_many_rules", f"At most {MAX_RULES_PER_ORG} alert rules")
            now = self._clock()
            record = st.RuleRecord(p.org, st.new_id("ar"), spec["name"], spec, "api", now, now)
            st.put_rule(cur, record, self._box)
            return record

        record = await self._store.acall(write)
        return JSONResponse(rule_json(record), status_code=201)

    async def _list(self, call: Call) -> Response:
        rules = await self.list_rules(call.org)
        return JSONResponse({"alert_rules": [rule_json(r) for r in rules]})

    async def list_rules(self, org: str) -> list[st.RuleRecord]:
        """`org`'s rules, channel secrets opened (callers show them through `rule_json`); the
        API's list route and the web UI call this."""
        return await self._store.acall(lambda cur: st.load_rules(cur, org, self._box))

    async def _get(self, call: Call) -> Response:
        p, rule_id = call.caller, call.path["rule_id"]
        record = await self._store.acall(lambda cur: st.get_rule(cur, p.org, rule_id, self._box))
        if record is None:
            raise _not_found()
        return JSONResponse(rule_json(record))

    async def _update(self, call: Call) -> Response:
        p, rule_id, body = call.caller, call.path["rule_id"], call.body
        if body.get("id", rule_id) != rule_id:
            raise ApiError(422, "validation_error", "Invalid alert rule",
                           [{"field": "id", "message": "is not this rule's id"}])  # fmt: skip
        # What GET answers may be sent back as is: its read-only fields are ignored.
        body = {k: v for k, v in body.items() if k not in READ_ONLY}
        replace = call.request.method == "PUT"
        old = await self._store.acall(lambda cur: st.get_rule(cur, p.org, rule_id, self._box))
        if old is None:
            raise _not_found()
        if old.source == "config":
            raise _declared()
        given = _keep_secrets(body, old.spec)
        merged = given if replace else {**old.spec, **given}
        spec = await self._parse(merged)

        def write(cur: duckdb.DuckDBPyConnection) -> st.RuleRecord:
            current = st.get_rule(cur, p.org, rule_id, self._box)
            if current is None:
                raise _not_found()
            other = st.rule_by_name(cur, p.org, spec["name"])
            if other is not None and other.rule_id != rule_id:
                raise _name_taken(spec["name"])
            record = dataclasses.replace(
                current, name=spec["name"], spec=spec, updated_at=self._clock()
            )
            st.put_rule(cur, record, self._box)
            if not spec.get("enabled", True):
                self._close_open_events(cur, p.org, rule_id)
            return record

        return JSONResponse(rule_json(await self._store.acall(write)))

    async def _delete(self, call: Call) -> Response:
        p, rule_id = call.caller, call.path["rule_id"]

        def write(cur: duckdb.DuckDBPyConnection) -> None:
            record = st.get_rule(cur, p.org, rule_id)
            if record is None:
                raise _not_found()
            if record.source == "config":
                raise _declared()
            self._close_open_events(cur, p.org, rule_id)
            st.delete_rule(cur, p.org, rule_id)

        await self._store.acall(write)
        return Response(status_code=204)

    async def _enable(self, call: Call) -> Response:
        return JSONResponse(rule_json(await self.set_enabled(call.org, call.path["rule_id"], True)))

    async def _disable(self, call: Call) -> Response:
        record = await self.set_enabled(call.org, call.path["rule_id"], False)
        return JSONResponse(rule_json(record))

    async def set_enabled(self, org: str, rule_id: str, enabled: bool) -> st.RuleRecord:
        """Enable or disable one of `org`'s rules (ApiError 404 if it has none such); disabling
        ends its open window events. The API's enable/disable routes and the web UI call this.
        Allowed on config rules too (an operator silencing one); the next start re-applies the
        file."""

        def write(cur: duckdb.DuckDBPyConnection) -> st.RuleRecord:
            record = st.get_rule(cur, org, rule_id, self._box)
            if record is None:
                raise _not_found()
            if bool(record.spec.get("enabled", True)) != enabled:
                spec = {**record.spec, "enabled": enabled}
                record = dataclasses.replace(record, spec=spec, updated_at=self._clock())
                st.put_rule(cur, record, self._box)
                if not enabled:
                    self._close_open_events(cur, org, rule_id)
            return record

        return await self._store.acall(write)

    def _close_open_events(self, cur: duckdb.DuckDBPyConnection, org: str, rule_id: str) -> None:
        """A rule that stops being evaluated can no longer resolve its window events: end them."""
        now = self._clock()
        cur.execute(
            f"""UPDATE {LAKE}.alert_events SET resolved_at = coalesce(resolved_at, ?),
                resolved_by = coalesce(resolved_by, 'rule_disabled'), cleared_at = ?
                WHERE org = ? AND rule_id = ? AND cleared_at IS NULL AND run_id IS NULL""",
            [now, now, org, rule_id],
        )

    async def _parse(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A checked rule as a JSON dict, or a 422 listing every problem with its field."""
        issues: list[ConfigIssue] = []
        spec = parse_dataclass(AlertRuleSpec, dict(body), "", issues)
        details = [_detail(i) for i in issues]
        if not details and self._check_channel is not None:
            for i, channel in enumerate(getattr(spec, "channels", [])):
                try:
                    await self._check_channel(channel)
                except ValueError as e:
                    details.append({"field": f"channels[{i}]", "message": str(e)})
        if details:
            raise ApiError(422, "validation_error", "Invalid alert rule", details)
        fields: dict[str, Any] = dataclasses.asdict(spec)
        return fields

    # -- events ----------------------------------------------------------------------------

    async def _resolve(self, call: Call) -> Response:
        return JSONResponse(await self.resolve(call.org, call.path["event_id"]))

    async def resolve(self, org: str, event_id: str) -> dict[str, Any]:
        """Resolve one of `org`'s events by hand (ApiError 404 if it has none such); the event
        as the API shows it. The API's PATCH and the web UI call this."""
        event = await self._store.acall(
            lambda cur: st.resolve_by_hand(cur, org, event_id, self._clock())
        )
        if event is None:
            raise ApiError(404, "not_found", "Alert event not found")
        result: dict[str, Any] = event
        return result


def rule_json(r: st.RuleRecord) -> dict[str, Any]:
    spec = dict(r.spec)
    spec["channels"] = [redact_channel(c) for c in spec.get("channels") or []]
    return {
        "id": r.rule_id,
        **spec,
        "source": r.source,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
    }


def redact_channel(channel: Mapping[str, Any]) -> dict[str, Any]:
    """A channel as the API shows it: a Slack URL (itself the secret) by its host, a webhook
    secret by its first four characters."""
    out = dict(channel)
    if out.get("type") == "slack" and isinstance(out.get("url"), str):
        parts = urlsplit(out["url"])
        out["url"] = f"{parts.scheme}://{parts.netloc}/…"
    if isinstance(out.get("secret"), str):
        out["secret"] = out["secret"][:4] + "…"
    return out


def _keep_secrets(body: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    """A client that sends back the channels it read (redacted) keeps the stored secrets."""
    out = dict(body)
    new, was = out.get("channels"), old.get("channels") or []
    if isinstance(new, list):
        out["channels"] = [
            was[i] if i < len(was) and c == redact_channel(was[i]) else c for i, c in enumerate(new)
        ]
    return out


def _detail(issue: ConfigIssue) -> dict[str, str]:
    path, message = issue.path, issue.message
    if not path and ": " in message:
        path, message = message.split(": ", 1)
    return {"field": path or "body", "message": message}


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "Alert rule not found")


def _declared() -> ApiError:
    return ApiError(409, "rule_declared", "This rule is declared in the config file; edit it there")


def _name_taken(name: str) -> ApiError:
    return ApiError(409, "name_taken", f"An alert rule named {name!r} exists already")
