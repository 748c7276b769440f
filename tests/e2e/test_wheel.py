"""What a user installs is what runs: the wheel built by `.ci/entrypoint.sh`, installed with its
declared dependencies only into a fresh venv, started by the container's entrypoint from a
folder outside the checkout; an OpenTelemetry SDK span goes in and its run comes out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from tests.e2e.server import KEYS, ROOT, make_server
from tests.e2e.test_otlp_sdk import _send_agent_trace

pytestmark = pytest.mark.slow
ENTRYPOINT = str(ROOT / ".ci" / "entrypoint.sh")


def sh(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["sh", ENTRYPOINT, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_built_wheel_serves_from_a_fresh_venv(tmp_path: Path) -> None:
    dist, venv, outside = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    outside.mkdir()
    sh("build", str(dist), cwd=ROOT)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    sh("install", str(dist), cwd=outside, env={"PYTHON": python})
    where = subprocess.run(
        [python, "-c", "import collector; print(collector.__file__)"],
        cwd=outside,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(venv) in where and str(ROOT) not in where

    server = make_server(outside)
    server.command = ["sh", ENTRYPOINT, "serve"]
    server.env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "AGENTLEDGER_CONFIG": str(server.config_path),
        "PYTHON": python,
    }
    server.start()
    try:
        sh("health", server.base_url, cwd=outside, env={"PYTHON": python})
        auth = {"authorization": f"Bearer {KEYS[('acme', 'ingest')]}"}
        exporter = OTLPSpanExporter(endpoint=f"{server.base_url}/v1/traces", headers=auth)
        _send_agent_trace(exporter, "wheel-svc")
        read = {"authorization": f"Bearer {KEYS[('acme', 'read')]}"}
        runs: list[dict[str, object]] = []
        deadline = time.monotonic() + 60
        while not runs and time.monotonic() < deadline:
            answer = httpx.get(f"{server.base_url}/api/runs", headers=read, timeout=10)
            assert answer.status_code == 200, answer.text
            runs = answer.json()["runs"]
            time.sleep(0.5)
        assert [(r["workflow_name"], r["status"], r["llm_call_count"]) for r in runs] == [
            ("triage", "success", 1)
        ]
    finally:
        assert server.stop() == 0
