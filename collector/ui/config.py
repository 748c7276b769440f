"""The `ui:` config section: whether the web UI is served and how long a sign-in lasts.

Parsed with the rest of the config (`collector/config.py`); read by `collector/ui/app.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.configparse import bounds


@dataclass(frozen=True, kw_only=True)
class UiConfig:
    """`enabled`: serve the pages under /ui/ (and redirect / there) on the API listener.
    `session_hours`: a sign-in lasts this long; revoking a key ends its sessions at once."""

    enabled: bool = True
    session_hours: float = field(default=12.0, metadata=bounds(ge=0.01, le=24 * 30))
