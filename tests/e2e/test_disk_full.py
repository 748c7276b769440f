"""A really full disk, end to end: the data dir on a small tmpfs, filled up under a running server.

Commits fail: OTLP gets a retryable 503, `/health` answers 503 "refusing" with the reason, and
the Parquet files the failed commits began are removed (no empty, unreferenced file stays in the
data dir); once space is back, data is accepted and `/health` is ok again. Needs root (mount).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server, make_server
from tests.e2e.test_disk_cap import NEW_NS, bulky, post


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def parquet_files(server: Server) -> dict[str, int]:
    return {
        str(p): p.stat().st_size for p in (server.data_dir / "data").rglob("ducklake-*.parquet")
    }


def test_a_full_disk_refuses_retryably_reports_it_and_leaves_no_files(disk: Path) -> None:
    server = make_server(disk).start()
    try:
        assert post(server, bulky(1, NEW_NS, n=5)).status_code == 200
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * (free - 300 * 1024))
        for seed in range(10, 14):
            r = post(server, bulky(seed, NEW_NS, n=50))  # ~1 MiB of Parquet each
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
        health = httpx.get(f"{server.base_url}/health")
        assert health.status_code == 503
        assert health.json()["status"] == "refusing"
        assert "No space left on device" in health.json()["reason"]

        (disk / "filler").unlink()
        time.sleep(5.5)  # failed commits' files are swept at most every 5 s
        assert post(server, bulky(30, NEW_NS, n=5)).status_code == 200
        assert httpx.get(f"{server.base_url}/health").json() == {"status": "ok"}
    finally:
        server.stop()
    on_disk = parquet_files(server)
    assert 0 not in on_disk.values()
    con = server.open_store()
    try:
        referenced = con.execute(
            "SELECT count(*) FROM __ducklake_metadata_lake.ducklake_data_file"
        ).fetchall()[0][0]
        stored = con.execute("SELECT count(*) FROM spans").fetchall()[0][0]
    finally:
        con.close()
    assert len(on_disk) == referenced
    assert stored == 10  # the two accepted requests, nothing of the refused ones
    assert any("failed commits left behind" in line for line in server.output)
