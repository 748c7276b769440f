"""`agentledger export` end to end: spans of two orgs sent over OTLP/HTTP to a real server, then
exported as Parquet, CSV and JSON lines — through the server while it runs (it holds the
catalog), and straight from the store once it has stopped — and every file read back.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import httpx
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.e2e.otlp import PROTOBUF, spans_request
from tests.e2e.server import KEYS, Server, agentledger_command

WINDOW = ("--from", "2023-11-14T00:00:00Z", "--to", "2023-11-15T00:00:00Z")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*agentledger_command(), "export", *args],
        capture_output=True,
        text=True,
        cwd=Path(tempfile.gettempdir()),  # outside the checkout
        timeout=120,
        check=False,
    )


def send(server: Server, org: str, n: int, seed: int) -> None:
    body = spans_request(f"{org}-svc", n=n, seed=seed).SerializeToString()
    r = httpx.post(
        f"{server.base_url}/v1/traces",
        content=body,
        headers={"content-type": PROTOBUF, "authorization": f"Bearer {KEYS[(org, 'ingest')]}"},
    )
    assert r.status_code == 200


def read_back(path: Path, fmt: str) -> list[dict[str, object]]:
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    if fmt == "csv":
        return pacsv.read_csv(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_export_through_the_running_server_then_from_the_stopped_store(
    server: Server, tmp_path: Path, fmt: str
) -> None:
    send(server, "acme", 5, seed=1)
    send(server, "globex", 3, seed=2)
    out = tmp_path / f"spans.{fmt}"
    args = ("--table", "spans", *WINDOW, "--format", fmt, "--output", str(out))

    # The running server holds the DuckDB catalog: opening it directly fails, with a way out.
    direct = cli(*args, "--config", str(server.config_path))
    assert direct.returncode == 1 and "--server" in direct.stderr

    done = cli(*args, "--server", server.base_url, "--key", KEYS[("acme", "admin")])
    assert done.returncode == 0, done.stderr
    rows = read_back(out, fmt)
    assert sorted(str(r["name"]) for r in rows) == [f"acme-svc span {i}" for i in range(5)]
    assert {r["org"] for r in rows} == {"acme"}  # the key's org only

    # A window without the spans exports none; a read key is refused.
    empty = cli("--table", "spans", "--from", "2024-01-01", "--to", "2024-02-01", "--format",
                fmt, "--output", str(out), "--server", server.base_url,
                "--key", KEYS[("acme", "admin")])  # fmt: skip
    assert empty.returncode == 0 and "0 rows" in empty.stdout
    refused = cli(*args, "--server", server.base_url, "--key", KEYS[("acme", "read")])
    assert refused.returncode == 1 and "401" in refused.stderr

    assert server.stop() == 0
    offline = cli(*args, "--config", str(server.config_path), "--org", "globex")
    assert offline.returncode == 0, offline.stderr
    rows = read_back(out, fmt)
    assert sorted(str(r["name"]) for r in rows) == [f"globex-svc span {i}" for i in range(3)]
    every = cli(*args, "--config", str(server.config_path))
    assert every.returncode == 0 and len(read_back(out, fmt)) == 8


def test_bad_requests_get_clear_errors(server: Server, tmp_path: Path) -> None:
    r = httpx.get(
        f"{server.base_url}/api/export",
        params={"table": "secrets", "from": "yesterday", "to": "2024-01-01"},
        headers={"authorization": f"Bearer {KEYS[('acme', 'admin')]}"},
    )
    assert r.status_code == 422
    assert [d["field"] for d in r.json()["details"]] == ["from"]
    r = httpx.get(
        f"{server.base_url}/api/export",
        params={"table": "secrets", "from": "2024-01-01", "to": "2024-01-02", "format": "xls"},
        headers={"authorization": f"Bearer {KEYS[('acme', 'admin')]}"},
    )
    assert r.status_code == 422
    assert [d["field"] for d in r.json()["details"]] == ["table", "format"]
    bad = cli("--table", "nope", *WINDOW, "--output", str(tmp_path / "x"))
    assert bad.returncode == 2 and "--table" in bad.stderr
