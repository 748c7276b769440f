"""The `evals:` section of the config (formerly `logs:`): output evaluation's rate limit,
evaluation worker, media store and callback retry bounds.

Parsed by `collector/config.py` into `Config.evals`; `EvalsApi` reads it at start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from collector.configparse import bounds


@dataclass(frozen=True, kw_only=True)
class EvalsConfig:
    """`media_dir` defaults to `<storage.path>/media`; `judge_timeout_s` bounds one rule's
    judge call in total (its own attempts and retries included)."""

    rate_limit_per_minute: int = field(default=60, metadata=bounds(ge=1))
    worker_concurrency: int = field(default=4, metadata=bounds(ge=1, le=256))
    worker_batch: int = field(default=100, metadata=bounds(ge=1, le=10_000))
    judge_timeout_s: float = field(default=60.0, metadata=bounds(ge=0.1, le=600))
    max_body_mib: int = field(default=64, metadata=bounds(ge=1, le=1024))
    media_dir: str | None = None
    max_attachment_mib: int = field(default=10, metadata=bounds(ge=1, le=1024))
    max_attachments: int = field(default=10, metadata=bounds(ge=0, le=100))
    media_url_ttl_s: int = field(default=300, metadata=bounds(ge=10, le=86_400))
    callback_attempts: int = field(default=8, metadata=bounds(ge=1, le=50))
    callback_base_delay_s: float = field(default=2.0, metadata=bounds(ge=0.01, le=3600))
    callback_max_delay_s: float = field(default=600.0, metadata=bounds(ge=0.01, le=86_400))
    rotations_per_hour: int = field(default=5, metadata=bounds(ge=1, le=100))

    def media_root(self, storage_path: str) -> Path:
        return Path(self.media_dir) if self.media_dir else Path(storage_path) / "media"
