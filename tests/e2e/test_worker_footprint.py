"""A decode worker loads what decoding, the processors and run assembly need, not the store:
after a trace is decoded, priced and derived into a run, the worker has not mapped DuckDB.

Each worker imports the server's main module again (multiprocessing's spawn) and unpickles its
processor chains and the deriver's assembly calls; any of them importing the config, the store or
the API pulled in DuckDB and ~60 MiB a worker with it.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.e2e.server import KEYS, make_server
from tests.e2e.test_runs import _post, _trace
from tests.e2e.test_worker_lifetime import _workers


def _mapped(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def test_a_worker_decodes_and_assembles_runs_without_loading_the_store(tmp_path: Path) -> None:
    server = make_server(tmp_path, workers=1).start()
    try:
        assert server.proc is not None
        _post(server, _trace(3))
        read = {"authorization": f"Bearer {KEYS[('acme', 'read')]}"}
        deadline = time.monotonic() + 60
        while True:  # derived: the deriver offloads assembly to the (one) worker
            runs = httpx.get(f"{server.base_url}/api/runs", headers=read).json()["runs"]
            if runs or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [r["status"] for r in runs] == ["success"]
        (worker,) = _workers(server.proc.pid)
        maps = _mapped(worker)
        assert "libarrow" in maps  # it is a decode worker, and it decoded
        assert "duckdb" not in maps
        assert "duckdb" in _mapped(server.proc.pid)
    finally:
        server.stop()
