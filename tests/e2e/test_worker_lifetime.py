"""Decode workers die with their server, whenever it dies: SIGKILLed in its first second (while
the workers are still starting) or once it serves, no worker process is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.server import agentledger_command, make_server


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found |= {int(x) for x in f.read().split()}
    except OSError:
        pass
    return found


def _workers(pid: int) -> set[int]:
    """The server's decode workers (spawned children; not the resource tracker)."""
    out = set()
    for child in _children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            out.add(child)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: set[int], timeout: float = 15.0) -> set[int]:
    deadline = time.monotonic() + timeout
    left = {p for p in pids if _alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if _alive(p)}
    return left


@pytest.mark.parametrize("when", ["starting", "serving"])
def test_workers_exit_when_the_server_is_killed(tmp_path: Path, when: str) -> None:
    server = make_server(tmp_path, workers=2)
    proc = subprocess.Popen(
        [*agentledger_command(), "serve", "--config", str(server.config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            workers = _workers(proc.pid)
            if len(workers) == 2:
                break
            time.sleep(0.01)
        assert len(workers) == 2, "the decode workers never started"
        if when == "serving":
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("ready:"):
                    break
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _wait_gone(workers) == set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
