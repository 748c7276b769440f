"""The reader copy of the catalog: while the server runs (and holds the catalog), a DuckDB in
another process attaches `catalog.reader.ducklake` READ_ONLY and reads what was committed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from collector.store.lake import ducklake_extension_path
from tests.e2e.otlp import PROTOBUF, spans_request
from tests.e2e.server import KEYS, make_server

READER = """
import sys, duckdb
con = duckdb.connect(config={"autoinstall_known_extensions": False,
                             "autoload_known_extensions": False})
con.execute(f"LOAD '{sys.argv[1]}'")
con.execute(f"ATTACH 'ducklake:{sys.argv[2]}' AS lake (DATA_PATH '{sys.argv[3]}', READ_ONLY)")
print(con.execute("SELECT count(*) FROM lake.spans WHERE org = 'acme'").fetchone()[0])
"""


def count_from_another_process(data: Path) -> int | None:
    copy = data / "catalog.reader.ducklake"
    if not copy.exists():
        return None
    out = subprocess.run(
        [sys.executable, "-c", READER, ducklake_extension_path(), str(copy), f"{data}/data/"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(out.stdout.strip())


def test_another_process_reads_the_running_servers_store(tmp_path: Path) -> None:
    server = make_server(tmp_path, storage="reader_copy_interval_s: 1").start()
    try:
        body = spans_request("svc", n=25, seed=3).SerializeToString()
        r = httpx.post(
            f"{server.base_url}/v1/traces",
            content=body,
            headers={
                "content-type": PROTOBUF,
                "authorization": f"Bearer {KEYS[('acme', 'ingest')]}",
            },
        )
        assert r.status_code == 200
        deadline = time.monotonic() + 30
        seen = None
        while time.monotonic() < deadline:
            seen = count_from_another_process(server.data_dir)
            if seen == 25:
                break
            time.sleep(0.5)
        assert seen == 25  # the server is still running and holding its catalog
        assert server.proc is not None and server.proc.poll() is None
    finally:
        server.stop()
