"""The `storage:` config section: where the DuckLake catalog and data live (a DuckDB file or
PostgreSQL; a local folder or S3 with its `s3:` credentials), the group commit, dedup, fsync and the
disk cap (`StorageConfig`), and the Collector's `batch` processor read as group commit settings
(`BatchConfig`); the store is opened from them (`StoreSettings.from_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from collector.configparse import ConfigIssue, bounds, parse_duration

POSTGRES = "postgres:"
"""A catalog starting with this is a libpq connection string: the shared, many-node store."""
S3 = "s3://"


@dataclass(frozen=True, kw_only=True)
class S3Config:
    """`storage.s3`: how DuckDB's httpfs reaches an S3-compatible object store (AWS, MinIO, R2...).
    `endpoint` is host[:port] without a scheme (None: AWS); the key and secret are never shown."""

    endpoint: str | None = None
    region: str = "us-east-1"
    url_style: Literal["path", "vhost"] = "vhost"
    use_ssl: bool = True
    key_id: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    def validate(self) -> list[ConfigIssue]:
        issues = []
        if self.endpoint is not None and "://" in self.endpoint:
            message = "host[:port] without a scheme (use_ssl says http or https)"
            issues.append(ConfigIssue("endpoint", message))
        return issues


def parse_conninfo(text: str) -> dict[str, str]:
    """A libpq `key=value key='quoted value'` string → its settings; ValueError when malformed.
    Only the form agentledger documents is read (no URI): the same string DuckLake is given."""
    settings: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            raise ValueError(f"expected key=value at {text[i:].split(maxsplit=1)[0]!r}")
        key = text[i:eq].strip()
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"expected key=value near {text[i : eq + 1]!r}")
        i = eq + 1
        while i < n and text[i] == " ":
            i += 1
        value: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while i < n and text[i] != "'":
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            if i >= n:
                raise ValueError(f"unterminated quote in the value of {key}")
            i += 1
        else:
            while i < n and not text[i].isspace():
                value.append(text[i])
                i += 1
        settings[key] = "".join(value)
    return settings


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    """Where the DuckLake store lives. Relative paths are relative to the working directory."""

    path: str = "./agentledger-data"
    catalog: str | None = None
    """A DuckDB catalog file (None: `<path>/catalog.ducklake`) or `postgres:<libpq settings>`."""
    data_path: str | None = None
    """A local folder (None: `<path>/data/`) or `s3://bucket/prefix/`."""
    s3: S3Config = field(default_factory=S3Config)
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
    memory_limit_mib: int = field(default=256, metadata=bounds(ge=64))
    """What DuckDB may hold in this process (queries, merges, caches); beyond, it spills to disk."""
    threads: int = field(default=0, metadata=bounds(ge=0))
    """DuckDB's threads for one query (0: one per core). Queries from different threads of the
    server run side by side whatever this is; it bounds how many cores one query (a merge) takes."""

    def catalog_path(self) -> str:
        return (
            self.catalog if self.catalog is not None else str(Path(self.path, "catalog.ducklake"))
        )

    def data_path_resolved(self) -> str:
        # DuckLake treats DATA_PATH as a prefix, hence the trailing separator.
        return self.data_path if self.data_path is not None else str(Path(self.path, "data")) + "/"

    @property
    def shared(self) -> bool:
        """Whether the catalog is in PostgreSQL, where several nodes share one store."""
        return self.catalog_path().startswith(POSTGRES)

    @property
    def remote_data(self) -> bool:
        return self.data_path_resolved().startswith(S3)

    def postgres_conninfo(self) -> str:
        """The libpq connection string of a PostgreSQL catalog (ValueError for a file)."""
        if not self.shared:
            raise ValueError("the catalog is a DuckDB file, not PostgreSQL")
        return self.catalog_path().removeprefix(POSTGRES).strip()

    def validate(self) -> list[ConfigIssue]:
        issues = [
            ConfigIssue(name, "must not be empty")
            for name, value in (
                ("path", self.path),
                ("catalog", self.catalog),
                ("data_path", self.data_path),
            )
            if value == ""
        ]
        if self.catalog and self.shared:
            issues += _conninfo_issues(self.postgres_conninfo())
        if self.data_path and "://" in self.data_path and not self.remote_data:
            scheme = self.data_path.split("://", 1)[0]
            message = f"{scheme}:// is not supported: a local folder or s3://bucket/prefix/"
            issues.append(ConfigIssue("data_path", message))
        if self.data_path and self.remote_data:
            bucket = self.data_path.removeprefix(S3).split("/", 1)[0]
            if not bucket:
                issues.append(ConfigIssue("data_path", "missing: the bucket (s3://bucket/prefix/)"))
            elif not self.data_path.endswith("/"):
                # DuckLake treats DATA_PATH as a prefix: without the slash files land beside it.
                issues.append(ConfigIssue("data_path", "must end with / (a folder of the bucket)"))
            issues += [
                ConfigIssue(f"s3.{name}", "missing: an s3:// data_path needs it (e.g. ${env:...})")
                for name, value in (("key_id", self.s3.key_id), ("secret", self.s3.secret))
                if not value
            ]
        return issues


def _conninfo_issues(conninfo: str) -> list[ConfigIssue]:
    """What a PostgreSQL catalog's connection string lacks (the value is never echoed: it may
    hold a password)."""
    try:
        settings = parse_conninfo(conninfo)
    except ValueError as e:
        return [ConfigIssue("catalog", f"not a libpq connection string: {e}")]
    missing = [
        what
        for key, what in (
            ("dbname", "dbname=... (the catalog's database)"),
            ("host", "host=... (every node must reach the same PostgreSQL server)"),
        )
        if not settings.get(key)
    ]
    return [ConfigIssue("catalog", "missing: " + "; ".join(missing))] if missing else []


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
