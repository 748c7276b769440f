"""Workspace settings of output evaluation: GET/PATCH /api/settings, token rotation, the
callback signing secret, /api/verify and /api/models.

Settings live in `eval_workspace` (secrets — provider keys, webhook URLs, the signing secret —
sealed with the SecretBox, shown as previews only); the evaluator reads judge keys and the
outbox reads channels and the signing secret from here.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import duckdb

from collector.api import schema as sc
from collector.api.apis import EVALS
from collector.api.routes import Call, Operation
from collector.errors import ApiError
from collector.evals import store as ls
from collector.evals.auth import LogsAuth, Need, operation
from collector.evals.callbacks import WEBHOOK_EVENTS
from collector.evals.evaluate import JudgeSettings
from collector.outbound import client as outbound
from collector.resources import shipped_text
from collector.secretbox import SecretBox, preview
from collector.store.writer import Store

PROVIDERS = ("anthropic", "openai", "openrouter")
FLAGS = (
    "onboardingDismissed", "notifyOnFlag", "notifyOnFail", "emailOnFlag", "emailOnFail",
    "slackNotificationsEnabled", "emailNotificationsEnabled", "webhookEnabled",
)  # fmt: skip
TEXTS = (
    "workspaceName", "slackChannelId", "notificationEmail", "color",
    "openaiJudgeModel", "anthropicJudgeModel", "openrouterJudgeModel",
)  # fmt: skip
URL_SECRETS = ("slackWebhookUrl", "outboundWebhookUrl")
KEY_SECRETS = ("openaiApiKey", "anthropicApiKey", "openrouterApiKey")
DEFAULTS: dict[str, Any] = {
    "notifyOnFlag": True,
    "notifyOnFail": True,
    "emailOnFlag": True,
    "emailOnFail": True,
    "slackNotificationsEnabled": True,
    "emailNotificationsEnabled": True,
    "webhookEnabled": True,
    "outboundWebhookEvents": ["flagged", "error"],
    "onboardingDismissed": False,
}
_TEXTS = {name: sc.string(200) for name in TEXTS}
SETTINGS_BODY = sc.obj(
    {
        **{name: sc.boolean() for name in FLAGS},
        **_TEXTS,
        **{name: sc.string(2048) for name in (*URL_SECRETS, *KEY_SECRETS)},
        "outboundWebhookEvents": sc.array(sc.string(32)),
        "estimatedIncidentCostUsd": sc.number(0),
        "defaultJudgeProvider": sc.enum(PROVIDERS),
    },
    extra=False,
)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
TTL_S = 5.0
MODELS_FILE = "log_models.json"


class Workspace:
    def __init__(
        self,
        store: Store,
        auth: LogsAuth,
        box: SecretBox,
        policy: outbound.OutboundPolicy,
    ) -> None:
        self._store = store
        self._auth = auth
        self._box = box
        self._policy = policy
        self._cache: dict[str, tuple[float, dict[str, Any], dict[str, str]]] = {}
        self._models_list: list[dict[str, str]] | None = None

    def operations(self) -> list[Operation]:
        def op(method: str, path: str, handler: Any, need: Need, summary: str, **more: Any) -> Any:
            return operation(self._auth, method, path, handler, need=need, summary=summary, **more)

        return [
            op("GET", "/api/settings", self._get, "read", "Workspace settings and usage"),
            op("PATCH", "/api/settings", self._patch, "admin", "Update workspace settings",
               body=SETTINGS_BODY),
            op("POST", "/api/settings/rotate-token", self._rotate, "admin",
               "A new workspace token (shown once; the old one stops working)",
               errors={429: "more than 5 rotations an hour"}),
            op("POST", "/api/settings/rotate-callback-secret", self._rotate_secret, "admin",
               "A new callback signing secret (shown once)"),
            op("GET", "/api/verify", self._verify, "poll", "Verify a token"),
            Operation(EVALS, "GET", "/api/models", self._models, "Preset model names (public)",
                      None),
        ]  # fmt: skip

    # -- reading ---------------------------------------------------------------------------

    async def load(self, org: str, fresh: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
        """(settings with defaults, unsealed secrets) of `org`; a callback secret is made on
        first use."""
        cached = self._cache.get(org)
        if cached is not None and not fresh and time.monotonic() - cached[0] < TTL_S:
            return cached[1], cached[2]
        row = await asyncio.to_thread(self._row, org)
        if row is None or "callbackSecret" not in (ls.loads(row["secrets"]) or {}):
            sealed = self._box.seal("whsec_" + secrets.token_hex(24))
            row = await self._store.acall(lambda cur: _ensure_secret(cur, org, sealed))
        settings = {**DEFAULTS, **(ls.loads(row["settings"]) or {})}
        opened = {k: self._box.unseal(v) for k, v in (ls.loads(row["secrets"]) or {}).items()}
        self._cache[org] = (time.monotonic(), settings, opened)
        return settings, opened

    def _row(self, org: str) -> dict[str, Any] | None:
        cur = self._store.cursor()
        try:
            return ls.workspace_row(cur, org)
        finally:
            cur.close()

    async def judge_settings(self, org: str) -> JudgeSettings:
        settings, opened = await self.load(org)
        keys = {p: opened[f"{p}ApiKey"] for p in PROVIDERS if opened.get(f"{p}ApiKey")}
        models = {
            p: settings[f"{p}JudgeModel"] for p in PROVIDERS if settings.get(f"{p}JudgeModel")
        }
        return JudgeSettings(settings.get("defaultJudgeProvider"), keys, models)

    # -- routes ----------------------------------------------------------------------------

    async def _get(self, call: Call) -> Any:
        caller = call.caller
        settings, opened = await self.load(caller.org, fresh=True)
        usage = await asyncio.to_thread(self._usage, caller.org)
        admin = caller.label.startswith(("wh-", "al_admin_"))
        body: dict[str, Any] = {
            "id": caller.org,
            "name": settings.get("workspaceName") or caller.org,
            "currentUserRole": "admin" if admin else "viewer",
            "canManageWorkspace": admin,
            "usage": usage,
            **{k: settings.get(k) for k in (*FLAGS, *TEXTS)},
            "workspaceName": settings.get("workspaceName") or caller.org,
            "outboundWebhookEvents": settings.get("outboundWebhookEvents"),
            "estimatedIncidentCostUsd": settings.get("estimatedIncidentCostUsd"),
            "defaultJudgeProvider": settings.get("defaultJudgeProvider"),
            "webhookToken": self._auth.token_preview(caller.org),
            "callbackSecret": preview(opened["callbackSecret"]),
        }
        for name in (*URL_SECRETS, *KEY_SECRETS):
            body[name] = preview(opened[name]) if opened.get(name) else None
        return body

    def _usage(self, org: str) -> dict[str, Any]:
        month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        row = self._store.query(
            "SELECT count(*), count(*) FILTER (created_at >= ?), (SELECT count(*) FROM "
            "eval_projects WHERE org = ?), (SELECT count(*) FROM eval_rules WHERE org = ?) "
            "FROM eval_logs WHERE org = ?",
            [month, org, org, org],
        )[0]
        return {"logsTotal": row[0], "logsThisMonth": row[1], "projects": row[2], "rules": row[3]}

    async def _patch(self, call: Call) -> Any:
        org = call.org
        plain, sealed, removed = await self._validate(call.body)
        await self._store.acall(lambda cur: _write(cur, org, plain, sealed, removed))
        self._cache.pop(org, None)
        return {"ok": True}

    async def _validate(
        self, body: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str], list[str]]:
        problems: list[dict[str, str]] = []
        plain: dict[str, Any] = {}
        sealed: dict[str, str] = {}
        removed: list[str] = []

        def bad(name: str, message: str) -> None:
            problems.append({"field": name, "message": message})

        for name, value in body.items():
            if name in FLAGS:
                if isinstance(value, bool):
                    plain[name] = value
                else:
                    bad(name, "must be true or false")
            elif name in TEXTS:
                if value is None or value == "":
                    plain[name] = None
                elif not isinstance(value, str) or len(value) > 200:
                    bad(name, "must be a string of at most 200 characters")
                elif name == "notificationEmail" and not _EMAIL.fullmatch(value.strip()):
                    bad(name, "must be an email address")
                else:
                    plain[name] = value.strip()
            elif name in URL_SECRETS or name in KEY_SECRETS:
                if value is None or value == "":
                    removed.append(name)
                elif not isinstance(value, str) or len(value) > 2048:
                    bad(name, "must be a string")
                else:
                    if name in URL_SECRETS:
                        try:
                            await outbound.check_destination(value.strip(), self._policy)
                        except outbound.OutboundRefused as e:
                            bad(name, str(e))
                            continue
                    sealed[name] = self._box.seal(value.strip())
            elif name == "outboundWebhookEvents":
                if not isinstance(value, list) or not set(value) <= set(WEBHOOK_EVENTS):
                    bad(name, f"must be an array of {', '.join(WEBHOOK_EVENTS)}")
                else:
                    plain[name] = list(dict.fromkeys(value))
            elif name == "estimatedIncidentCostUsd":
                ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
                if value is not None and not ok:
                    bad(name, "must be a number >= 0")
                else:
                    plain[name] = value
            elif name == "defaultJudgeProvider":
                if value is not None and value not in PROVIDERS:
                    bad(name, f"must be one of {', '.join(PROVIDERS)}")
                else:
                    plain[name] = value
            else:
                bad(name, "is not a setting")
        if problems:
            raise ApiError(422, "validation_error", "Invalid settings", problems)
        return plain, sealed, removed

    async def _rotate(self, call: Call) -> Any:
        token = await self._auth.rotate(call.org, datetime.now(UTC))
        return {"webhookToken": token}

    async def _rotate_secret(self, call: Call) -> Any:
        """A new callback signing secret, shown in full this once (GET shows a preview)."""
        caller = call.caller
        secret = "whsec_" + secrets.token_hex(24)
        sealed = self._box.seal(secret)
        await self._store.acall(
            lambda cur: _write(cur, caller.org, {}, {"callbackSecret": sealed}, [])
        )
        self._cache.pop(caller.org, None)
        return {"callbackSecret": secret}

    async def _verify(self, call: Call) -> Any:
        settings, _ = await self.load(call.org)
        return {"workspaceName": settings.get("workspaceName") or call.org}

    async def _models(self, call: Call) -> Any:
        # "Public helper endpoint": a preset list, no token needed.
        if self._models_list is None:
            self._models_list = await asyncio.to_thread(_load_models)
        return self._models_list


def _load_models() -> list[dict[str, str]]:
    """The judge's model list shipped in the data package (`config/log_models.json`)."""
    found: list[dict[str, str]] = json.loads(shipped_text(MODELS_FILE))
    return found


def _ensure_secret(cur: duckdb.DuckDBPyConnection, org: str, sealed: str) -> dict[str, Any]:
    row = ls.workspace_row(cur, org)
    if row is not None and "callbackSecret" in (ls.loads(row["secrets"]) or {}):
        return row
    _write(cur, org, {}, {"callbackSecret": sealed}, [])
    found = ls.workspace_row(cur, org)
    assert found is not None
    return found


def _write(
    cur: duckdb.DuckDBPyConnection,
    org: str,
    plain: dict[str, Any],
    sealed: dict[str, str],
    removed: list[str],
) -> None:
    row = ls.workspace_row(cur, org)
    if row is None:
        ls.insert(cur, "eval_workspace", {"org": org, "settings": "{}", "secrets": "{}"})
        row = {"settings": "{}", "secrets": "{}"}
    settings = {**(ls.loads(row["settings"]) or {}), **plain}
    kept = {k: v for k, v in (ls.loads(row["secrets"]) or {}).items() if k not in removed}
    cur.execute(
        "UPDATE eval_workspace SET settings = ?, secrets = ?, updated_at = ? WHERE org = ?",
        [ls.dumps(settings), ls.dumps({**kept, **sealed}), datetime.now(UTC), org],
    )
