"""Admin HTTP API of alert rules (`/api/alert-rules`: create, list, get, update, delete,
enable, disable) and manual resolution of alert events (`PATCH /api/alert-events/{id}`).

Admin keys of the org only; bodies are checked with the engine's rule dataclass through the
config parser (`collector/configparse.py`); records go to `collector/alerts/store.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import duckdb
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector.alerts import store as st
from collector.api.body import read_json_object
from collector.api.shapes import iso
from collector.auth.keys import Authenticator, AuthError
from collector.configparse import ConfigIssue, parse_dataclass
from collector.errors import ApiError, error_response, from_api_error
from collector.model import Principal
from collector.secretbox import SecretBox
from collector.store.lake import LAKE
from collector.store.writer import Store
from processors.alerts.rules import AlertRuleSpec

ChannelCheck = Callable[[Mapping[str, Any]], None]
"""Raises ValueError with a reason when a channel spec cannot be used (e.g. a refused URL)."""
MAX_RULES_PER_ORG = 500
READ_ONLY = frozenset({"id", "source", "created_at", "updated_at"})


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

    def routes(self) -> list[Route]:
        one = "/api/alert-rules/{rule_id}"
        routes = [
            Route("/api/alert-rules", self._handle(self._create), methods=["POST"]),
            Route("/api/alert-rules", self._handle(self._list), methods=["GET"]),
            Route(one, self._handle(self._get), methods=["GET"]),
            Route(one, self._handle(self._update), methods=["PATCH", "PUT"]),
            Route(one, self._handle(self._delete), methods=["DELETE"]),
            Route(one + "/enable", self._handle(self._enable), methods=["POST"]),
            Route(one + "/disable", self._handle(self._disable), methods=["POST"]),
            Route("/api/alert-events/{event_id}", self._handle(self._resolve), methods=["PATCH"]),
        ]
        # Other methods on these paths: the JSON error shape, not Starlette's plain-text 405.
        allowed: dict[str, list[str]] = {}
        for route in routes:
            allowed.setdefault(route.path, []).extend(sorted(route.methods or ()))
        for path, methods in allowed.items():
            rest = [m for m in _METHODS if m not in methods]
            routes.append(Route(path, _not_allowed(methods), methods=rest))
        return routes

    def _handle(self, fn: Callable[[Principal, Request], Any]) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            try:
                try:
                    principal = self._auth.authenticate(
                        request.headers.get("authorization"), "admin"
                    )
                except AuthError as e:
                    raise ApiError(e.status, e.code, str(e)) from e
                result: Response = await fn(principal, request)
                return result
            except ApiError as e:
                return from_api_error(e)
            except duckdb.TransactionException:
                return error_response(
                    409, "conflict", "A concurrent change won; retry", headers={"Retry-After": "1"}
                )

        return run

    # -- rules -----------------------------------------------------------------------------

    async def _create(self, p: Principal, request: Request) -> Response:
        spec = self._parse(await read_json_object(request))

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

    async def _list(self, p: Principal, request: Request) -> Response:
        rules = await self.list_rules(p.org)
        return JSONResponse({"alert_rules": [rule_json(r) for r in rules]})

    async def _get(self, p: Principal, request: Request) -> Response:
        rule_id = str(request.path_params["rule_id"])
        record = await self._store.acall(lambda cur: st.get_rule(cur, p.org, rule_id, self._box))
        if record is None:
            raise _not_found()
        return JSONResponse(rule_json(record))

    async def _update(self, p: Principal, request: Request) -> Response:
        rule_id = str(request.path_params["rule_id"])
        body = await read_json_object(request)
        if body.get("id", rule_id) != rule_id:
            raise ApiError(422, "validation_error", "Invalid alert rule",
                           [{"field": "id", "message": "is not this rule's id"}])  # fmt: skip
        # What GET answers may be sent back as is: its read-only fields are ignored.
        body = {k: v for k, v in body.items() if k not in READ_ONLY}
        replace = request.method == "PUT"
        old = await self._store.acall(lambda cur: st.get_rule(cur, p.org, rule_id, self._box))
        if old is None:
            raise _not_found()
        if old.source == "config":
            raise _declared()
        given = _keep_secrets(body, old.spec)
        merged = given if replace else {**old.spec, **given}
        spec = self._parse(merged)

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

    async def _delete(self, p: Principal, request: Request) -> Response:
        rule_id = str(request.path_params["rule_id"])

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

    async def _enable(self, p: Principal, request: Request) -> Response:
        record = await self.set_enabled(p.org, str(request.path_params["rule_id"]), True)
        return JSONResponse(rule_json(record))

    async def _disable(self, p: Principal, request: Request) -> Response:
        record = await self.set_enabled(p.org, str(request.path_params["rule_id"]), False)
        return JSONResponse(rule_json(record))

    async def list_rules(self, org: str) -> list[st.RuleRecord]:
        """`org`'s rules, channel secrets opened (callers show them through `rule_json`)."""
        return await self._store.acall(lambda cur: st.load_rules(cur, org, self._box))

    async def set_enabled(self, org: str, rule_id: str, enabled: bool) -> st.RuleRecord:
        """Enable or disable one of `org`'s rules (ApiError 404 if it has none such); disabling
        ends its open window events. The API's enable/disable routes and the web UI call this."""

        # Allowed on config rules too (an operator silencing one); the next start re-applies
        # the file.
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

    def _parse(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A checked rule as a JSON dict, or a 422 listing every problem with its field."""
        issues: list[ConfigIssue] = []
        spec = parse_dataclass(AlertRuleSpec, dict(body), "", issues)
        details = [_detail(i) for i in issues]
        if not details and self._check_channel is not None:
            for i, channel in enumerate(getattr(spec, "channels", [])):
                try:
                    self._check_channel(channel)
                except ValueError as e:
                    details.append({"field": f"channels[{i}]", "message": str(e)})
        if details:
            raise ApiError(422, "validation_error", "Invalid alert rule", details)
        fields: dict[str, Any] = dataclasses.asdict(spec)
        return fields

    # -- events ----------------------------------------------------------------------------

    async def _resolve(self, p: Principal, request: Request) -> Response:
        event_id = str(request.path_params["event_id"])
        empty = request.headers.get("content-length") in (None, "0")
        body = (
            {}
            if empty and "transfer-encoding" not in request.headers
            else (await read_json_object(request))
        )
        unknown = sorted(set(body) - {"resolved"})
        if unknown or body.get("resolved", True) is not True:
            raise ApiError(
                422,
                "validation_error",
                "Invalid alert event update",
                [{"field": k, "message": "unknown field"} for k in unknown]
                or [{"field": "resolved", "message": "must be true (an event cannot reopen)"}],
            )
        return JSONResponse(await self.resolve(p.org, event_id))

    async def resolve(self, org: str, event_id: str) -> dict[str, Any]:
        """Resolve one of `org`'s events by hand (ApiError 404 if it has none such); the event
        as the API shows it. The API's PATCH and the web UI call this."""
        event = await self._store.acall(
            lambda cur: st.resolve_by_hand(cur, org, event_id, self._clock())
        )
        if event is None:
            raise ApiError(404, "not_found", "Alert event not found")
        return event


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _not_allowed(methods: list[str]) -> Callable[[Request], Any]:
    shown = ", ".join(m for m in methods if m != "HEAD")

    async def answer(request: Request) -> Response:
        message = f"{request.method} is not allowed here (allowed: {shown})"
        return error_response(405, "method_not_allowed", message, headers={"Allow": shown})

    return answer


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
