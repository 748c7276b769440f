"""The HTTP APIs this server speaks: each one's name, the seed doc it follows, the paths it owns
and its error shape. Every operation (`collector/api/routes.py`) names one of these; the OpenAPI
document (`collector/api/openapi.py`) groups operations by them.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from collector.api.routes import Api
from collector.errors import ApiError, from_api_error

READ = Api(
    "read",
    "Dashboard read API",
    doc="dashboard-read-api.txt: runs, workflows, alert events, metrics (read tokens, GET only)",
    prefixes=("/api/runs", "/api/workflows", "/api/alert-events", "/api/metrics", "/api/org"),
)
MCP = Api(
    "mcp",
    "MCP capture and reads",
    doc="capture-event-api.txt: capture-session / capture-event, and the MCP read routes",
    prefixes=("/api/v1/", "/api/mcp"),
)
ROI = Api(
    "roi",
    "ROI API",
    doc="track-api.txt: POST /v1/track, task types, org settings, events and reports",
    prefixes=("/v1/track", "/v1/task-types", "/v1/settings", "/v1/events", "/v1/reports"),
)


def _tracira(error: ApiError) -> Response:
    # The doc's 429 is {"error": "..."} alone; every other error has the common shape.
    if error.status == 429:
        return JSONResponse({"error": str(error)}, status_code=429, headers=error.headers)
    return from_api_error(error)


EVALS = Api(
    "evals",
    "Output evaluation API",
    doc="logs-rules-api.txt: logs, rules, projects, settings, media (workspace token or keys)",
    prefixes=(
        "/api/logs",
        "/api/projects",
        "/api/rules",
        "/api/settings",
        "/api/verify",
        "/api/models",
        "/api/media",
    ),
    render=_tracira,
)
ADMIN = Api(
    "admin",
    "Admin API",
    doc="keys, per-org settings, alert rules, retention and export (admin keys of the org)",
    prefixes=("/api/keys", "/api/alert-rules", "/api/retention", "/api/export", "/api/org-"),
)
ALL = (READ, MCP, ROI, EVALS, ADMIN)
