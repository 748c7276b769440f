"""JSON shapes of the logs API (the Tracira logs API doc): a listed log (`executions[]`), a full
log, its status, and the POST answer with its inline verdict.

`logs_api` and `logs_query` turn `eval_logs` rows (dicts keyed by column) into these.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from collector.api.shapes import iso
from collector.evals import store as ls

PREVIEW_CHARS = 200


def _t(value: Any) -> str | None:
    return iso(value) if value is not None else None


def execution_json(row: dict[str, Any]) -> dict[str, Any]:
    status = row["status"]
    output = row.get("output") or ""
    return {
        "id": row["id"],
        "timestamp": _t(row["created_at"]),
        "status": status,
        "projectId": row["project_id"],
        "projectName": row["project"],
        "taskName": row["task"],
        "model": row["model"],
        "latencyMs": row["latency_ms"],
        "costUsd": row["cost_usd"],
        "confidence": row["confidence"],
        "verdict": None if status == "pending" else status,
        "confidenceScore": row["confidence_score"],
        "explanation": row["explanation"],
        "humanDecision": row["decision"],
        "decidedBy": row["decided_by"],
        "decidedAt": _t(row["decided_at"]),
        "sessionId": row["session_id"],
        "subjectId": row["subject_id"],
        "actorId": row["actor_id"],
        "tags": list(row["tags"] or []),
        "runId": row["run_id"],
        "outputPreview": output[:PREVIEW_CHARS],
    }


def log_json(row: dict[str, Any]) -> dict[str, Any]:
    attachments = ls.loads(row["attachments"]) or []
    for a in attachments:
        a["url"] = "/api/media/" + quote(a["key"])
    return {
        **execution_json(row),
        "workspaceId": row["org"],
        "userId": row["key_id"],
        "output": row["output"],
        "input": ls.loads(row["input"]),
        "inputText": row["input_text"],
        "metadata": ls.loads(row["metadata"]) or {},
        "attachments": attachments,
        "callbackUrl": row["callback_url"],
        "callbackEvents": row["callback_events"],
        "appliedRules": ls.loads(row["rules"]) or [],
        "receivedAt": _t(row["received_at"]),
        "evaluatedAt": _t(row["evaluated_at"]),
    }


def status_json(row: dict[str, Any]) -> dict[str, Any]:
    status = row["status"]
    return {
        "id": row["id"],
        "status": status,
        "verdict": None if status == "pending" else status,
        "confidenceScore": row["confidence_score"],
        "explanation": row["explanation"],
        "humanDecision": row["decision"],
        "decidedBy": row["decided_by"],
        "appliedRules": ls.loads(row["rules"]) or [],
    }


def post_json(row: dict[str, Any], inline: bool) -> dict[str, Any]:
    """{"ok", "id", "status"}; with the verdict when it is known (sync, or a replayed id)."""
    body: dict[str, Any] = {"ok": True, "id": row["id"], "status": row["status"]}
    if inline and row["status"] != "pending":
        rules = ls.loads(row["rules"]) or []
        body["verdict"] = {
            "pass": row["status"] == "pass",
            "rules": [
                {
                    "id": r["ruleId"],
                    "name": r["ruleName"],
                    "type": r["ruleType"],
                    "triggered": r["triggered"],
                    "outcome": r["outcome"],
                    "explanation": r["explanation"],
                }
                for r in rules
            ],
        }
        body["confidenceScore"] = row["confidence_score"]
        body["explanation"] = row["explanation"]
    return body
