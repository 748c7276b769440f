"""The `storage:` config section: where the DuckLake catalog and data live, the group commit, dedup,
fsync and the disk cap (`StorageConfig`), and the Collector's `batch` processor read as group
commit settings (`BatchConfig`); the store is opened from them (`StoreSettings.from_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from collector.configparse import ConfigIssue, bounds, parse_duration


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    """Where the DuckLake store lives. Relative paths are relative to the working directory."""

    path: str = "./agentledger-data"
    catalog: str | None = None
    data_path: str | None = None
    commit_interval_ms: int = field(default=20, metadata=bounds(ge=1, le=10_000))
    commit_max_rows: int = field(default=50_000, metadata=bounds(ge=1))
    dedup_window_s: int = field(default=900, metadata=bounds(ge=0))
    fsync: bool = True
    max_size_mib: int | None = field(default=None, metadata=bounds(ge=1))
    on_full: Literal["drop_oldest", "refuse"] = (
        "refuse"  # past max_size_mib (collector/governance/diskcap.py)
    )
    size_check_interval_s: int = field(default=10, metadata=bounds(ge=1))
    reader_copy_interval_s: int = field(default=0, metadata=bounds(ge=0))
    """Publish `catalog.reader.ducklake` for other processes' readers this often; 0: never."""
    memory_limit_mib: int = field(default=512, metadata=bounds(ge=64))
    """What DuckDB may hold in this process (queries, merges, caches); beyond, it spills to disk."""

    def catalog_path(self) -> str:
        return (
            self.catalog if self.catalog is not None else str(Path(self.path, "catalog.ducklake"))
        )

    def data_path_resolved(self) -> str:
        # DuckLake treats DATA_PATH as a prefix, hence the trailing separator.
        return self.data_path if self.data_path is not None else str(Path(self.path, "data")) + "/"

    def validate(self) -> list[ConfigIssue]:
        return [
            ConfigIssue(name, "must not be empty")
            for name, value in (
                ("path", self.path),
                ("catalog", self.catalog),
                ("data_path", self.data_path),
            )
            if value == ""
        ]


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """The OpenTelemetry Collector's `batch` processor, read as the group commit's settings when
    a pipeline lists it: a request waits at most `timeout` to share a commit, which is made as
    soon as `send_batch_size` rows wait (or `send_batch_max_size`, when set and smaller). They
    replace `storage.commit_interval_ms` and `storage.commit_max_rows`. `metadata_keys` and
    `metadata_cardinality_limit` are accepted: commits are per store, not per client metadata."""

    timeout: str = "200ms"
    send_batch_size: int = field(default=8192, metadata=bounds(ge=1))
    send_batch_max_size: int = field(default=0, metadata=bounds(ge=0))
    metadata_keys: list[str] = field(default_factory=list)
    metadata_cardinality_limit: int = field(default=1000, metadata=bounds(ge=0))

    def commit_interval_s(self) -> float:
        return parse_duration(self.timeout)

    def commit_max_rows(self) -> int:
        cap = self.send_batch_max_size
        return min(self.send_batch_size, cap) if cap else self.send_batch_size

    def validate(self) -> list[ConfigIssue]:
        try:
            seconds = self.commit_interval_s()
        except ValueError as e:
            return [ConfigIssue("timeout", str(e))]
        if not 0.001 <= seconds <= 10:
            # The same bounds as storage.commit_interval_ms: every acknowledgement waits on it.
            return [ConfigIssue("timeout", f"must be between 1ms and 10s, got {self.timeout}")]
        return []
