"""`storage:` for a shared store: the PostgreSQL catalog's connection string and the S3 data path
are checked, and every problem says what is missing without echoing a password."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from collector.config import parse_config
from collector.configparse import ConfigError
from collector.store.config import StorageConfig, parse_conninfo
from collector.store.lake import StoreSettings, connect

PG = "postgres:host=db port=5432 dbname=agentledger user=al password=${env:PGPASSWORD}"
S3 = {"endpoint": "minio:9000", "url_style": "path", "use_ssl": False}


def _issues(raw: dict[str, object], env: dict[str, str] | None = None) -> dict[str, str]:
    try:
        parse_config(raw, env or {})
    except ConfigError as e:
        return {issue.path: issue.message for issue in e.issues}
    return {}


def test_the_issue_example_is_valid() -> None:
    raw = {
        "storage": {
            "catalog": PG,
            "data_path": "s3://bucket/agentledger/",
            "s3": {**S3, "region": "us-east-1", "key_id": "${env:K}", "secret": "${env:S}"},
        },
        "secrets": {"key": "${env:AGENTLEDGER_SECRET_KEY}"},
        "cluster": {"lease_s": 10},
    }
    env = {"PGPASSWORD": "pw", "K": "k", "S": "s", "AGENTLEDGER_SECRET_KEY": "A" * 43 + "="}
    config = parse_config(raw, env)
    assert config.storage.shared and config.storage.remote_data
    assert config.storage.postgres_conninfo().endswith("password=pw")
    assert config.cluster.lease_s == 10


def test_a_shared_catalog_needs_the_sealing_key_from_config_or_env() -> None:
    issues = _issues({"storage": {"catalog": PG}}, {"PGPASSWORD": "pw"})
    assert list(issues) == ["secrets.key"]
    assert "not the per-node file" in issues["secrets.key"]


def test_what_is_missing_is_named() -> None:
    issues = _issues(
        {
            "storage": {"catalog": "postgres:port=5432 user=al", "data_path": "s3://b/x/"},
            "secrets": {"key": "A" * 43 + "="},
        }
    )
    assert "dbname" in issues["storage.catalog"]
    assert {"storage.s3.key_id", "storage.s3.secret"} <= set(issues)  # no credentials
    issues = _issues(
        {
            "storage": {"data_path": "s3://b/x/", "s3": {"endpoint": "http://minio:9000"}},
        }
    )
    assert set(issues) == {"storage.s3.key_id", "storage.s3.secret", "storage.s3.endpoint"}
    assert (
        "/"
        in _issues({"storage": {"data_path": "s3://b/x", "s3": {"key_id": "k", "secret": "s"}}})[
            "storage.data_path"
        ]
    )
    assert "not supported" in _issues({"storage": {"data_path": "gs://b/"}})["storage.data_path"]


def test_no_password_is_echoed() -> None:
    storage = StorageConfig(catalog="postgres:host=h dbname=d password='se cret")
    messages = " ".join(i.message for i in storage.validate())
    assert "unterminated quote" in messages
    assert "se cret" not in messages


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=db port=5432", {"host": "db", "port": "5432"}),
        ("dbname='my db' password='it\\'s'", {"dbname": "my db", "password": "it's"}),
        ("host = db", {"host": "db"}),
        ("", {}),
    ],
)
def test_conninfo(text: str, expected: dict[str, str]) -> None:
    assert parse_conninfo(text) == expected


def test_the_default_is_a_local_single_node_store() -> None:
    storage = parse_config({}, {}).storage
    assert not storage.shared and not storage.remote_data


@pytest.mark.parametrize(("threads", "expected"), [(0, None), (1, 1)])
def test_duckdbs_memory_bound_and_threads_come_from_storage(
    tmp_path: Path, threads: int, expected: int | None
) -> None:
    config = parse_config(
        {"storage": {"path": str(tmp_path), "memory_limit_mib": 300, "threads": threads}}, {}
    )
    con = connect(StoreSettings.from_config(config.storage))
    try:
        limit, used = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('threads')"
        ).fetchone() or (None, None)
    finally:
        con.close()
    assert limit == "300.0 MiB"
    # 0 leaves DuckDB's own default: a thread per core.
    assert used == (expected if expected is not None else duckdb_default_threads())


def duckdb_default_threads() -> int:
    con = duckdb.connect()
    try:
        return int((con.execute("SELECT current_setting('threads')").fetchone() or [0])[0])
    finally:
        con.close()


def test_threads_are_never_negative() -> None:
    assert _issues({"storage": {"threads": -1}}) == {"storage.threads": "must be >= 0, got -1"}
