"""The `storage:` config section: where the DuckLake catalog and data live, the group commit, dedup,
fsync and the disk cap (`StorageConfig`); the store is opened from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from collector.configparse import (
    ConfigIssue,
    bounds,
)


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
