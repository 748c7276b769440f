"""Real servers for the tests of a shared store: a PostgreSQL 15 cluster (`initdb` + `pg_ctl` as
the `postgres` user, in a temp dir, on a free port) and an S3 endpoint (`moto_server`), both started
once per test session, with a fresh database and bucket per test (`SharedStore`).

The fixtures are registered in `tests/conftest.py`; tests needing them skip where the PostgreSQL
binaries are missing (CI machines have them: `.ci/run` checks).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.store.config import S3Config
from collector.store.lake import StoreSettings

PG_BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")
S3_KEY_ID, S3_SECRET = "test-key-id", "test-secret-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str | None:
    for folder in PG_BIN_DIRS:
        path = Path(folder, name)
        if path.exists():
            return str(path)
    return shutil.which(name)


def _as_postgres(args: list[str]) -> list[str]:
    """Run as the `postgres` user when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


class PostgresServer:
    """A throwaway PostgreSQL cluster; `conninfo(db)` is a libpq string for one of its databases."""

    def __init__(self, *, fsync: bool = False) -> None:
        """`fsync` off for tests (nothing here must survive a power loss); on to measure."""
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise FileNotFoundError("PostgreSQL's initdb / pg_ctl are not installed")
        self._pg_ctl = pg_ctl
        self.root = Path(tempfile.mkdtemp(prefix="agentledger-pg-"))
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.root, pg.pw_uid, pg.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        subprocess.run(
            _as_postgres([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres"]),
            check=True,
            capture_output=True,
        )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if fsync else 'off'} -c max_connections=200"
        )
        log = str(self.root / "log")
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(self.data), "-o", options, "-l", log, "-w", "start"]),
            check=True,
            capture_output=True,
        )

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user=postgres"

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return name

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(
                _as_postgres([self._pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"]),
                check=True,
                capture_output=True,
            )
        shutil.rmtree(self.root, ignore_errors=True)


class S3Server:
    """moto's S3 server on a free port; `bucket()` makes a new empty bucket."""

    def __init__(self) -> None:
        self.port = free_port()
        script = Path(sys.executable).with_name("moto_server")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
        self.proc = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                raise RuntimeError("moto_server did not start")
            time.sleep(0.1)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def s3_config(self) -> S3Config:
        return S3Config(
            endpoint=self.endpoint,
            region="us-east-1",
            url_style="path",
            use_ssl=False,
            key_id=S3_KEY_ID,
            secret=S3_SECRET,
        )

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://{self.endpoint}",
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )

    def bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True)
class SharedStore:
    """One test's PostgreSQL catalog database and S3 bucket."""

    postgres: PostgresServer
    s3: S3Server
    dbname: str
    bucket: str

    @property
    def conninfo(self) -> str:
        return self.postgres.conninfo(self.dbname)

    @property
    def catalog(self) -> str:
        return f"postgres:{self.conninfo}"

    @property
    def data_path(self) -> str:
        return f"s3://{self.bucket}/agentledger/"

    def settings(self, **kwargs: object) -> StoreSettings:
        return StoreSettings(
            catalog=self.catalog,
            data_path=self.data_path,
            s3=self.s3.s3_config(),
            **kwargs,  # type: ignore[arg-type]
        )

    def storage_yaml(self) -> str:
        """More entries of a `storage:` flow mapping that put a node on this store."""
        c = self.s3.s3_config()
        return (
            f'catalog: "{self.catalog}", data_path: "{self.data_path}", '
            f's3: {{endpoint: "{c.endpoint}", region: {c.region}, url_style: path, '
            f'use_ssl: false, key_id: "{c.key_id}", secret: "{c.secret}"}}'
        )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def shared_store(postgres_server: PostgresServer, s3_server: S3Server) -> SharedStore:
    return SharedStore(
        postgres_server, s3_server, postgres_server.create_database(), s3_server.bucket()
    )
