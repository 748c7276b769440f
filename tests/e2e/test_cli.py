"""The `agentledger` command end to end: --version, validate, the first-start bootstrap, signals.

Runs the installed console script (or `python -m collector.cli`) in subprocesses, on config
files written to tmp_path, and the real server through `tests/e2e/server.py`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from collector import __version__
from tests.e2e.otlp import PROTOBUF, spans_request
from tests.e2e.server import ROOT, Server, agentledger_command, config_yaml, make_server

KEY_LINE = re.compile(
    r"^  (admin|ingest|read)\s+(al_(?:admin|live|read)_[0-9a-f]{8}_[0-9a-f]{40})$"
)


def agentledger(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as outside:  # not the checkout: no source beside it
        return subprocess.run(
            [*agentledger_command(), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=outside,
            env={**os.environ, **(env or {})},
            check=False,
        )


def test_version() -> None:
    done = agentledger("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"agentledger {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", __version__)


def test_bare_command_prints_help_and_validate_defaults_to_the_embedded_config() -> None:
    done = agentledger()
    assert done.returncode == 0
    assert "usage: agentledger" in done.stdout and "serve" in done.stdout
    done = agentledger("validate")  # from a folder with no config beside it
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_validate_accepts_good_configs(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(
        config_yaml(tmp_path / "data", limits="max_queue_items: '${env:AL_TEST_Q:-500}'")
    )
    done = agentledger("validate", "--config", str(cfg))
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
    done = agentledger("validate", "--config", str(ROOT / "config" / "default.yaml"))
    assert (done.returncode, done.stdout.strip()) == (0, "ok")
    # The example for production validates once its keys are in the environment.
    keys = {
        f"{org}_{scope}_KEY": f"al_{prefix}_{n:08x}_" + "a" * 40
        for n, (org, (scope, prefix)) in enumerate(
            (org, sp)
            for org in ("ACME", "GLOBEX")
            for sp in (("INGEST", "live"), ("READ", "read"), ("ADMIN", "admin"))
        )
    }
    production = ROOT / "config" / "examples" / "production.yaml"
    done = agentledger("validate", "--config", str(production), env=keys)
    assert done.returncode == 0, done.stderr


def test_validate_prints_every_error_with_its_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "receivers:\n"
        "  otlp:\n"
        "    protocols:\n"
        "      htttp: {endpoint: 127.0.0.1:4318}\n"
        "      grpc: {endpoint: nohost, max_recv_msg_size_mib: 0}\n"
        "limits: {max_queue_items: zero}\n"
        "storage: {commit_interval_ms: 0, path: '${env:AL_TEST_SURELY_UNSET}'}\n"
        "sevice: {}\n"
    )
    done = agentledger("validate", "--config", str(cfg))
    assert done.returncode != 0
    assert "ok" not in done.stdout.split()
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    paths = [line.removeprefix("error: ").split(":", 1)[0] for line in errors]
    assert sorted(paths) == sorted(
        [
            "receivers.otlp.protocols.htttp",
            "receivers.otlp.protocols.grpc.endpoint",
            "receivers.otlp.protocols.grpc.max_recv_msg_size_mib",
            "limits.max_queue_items",
            "storage.commit_interval_ms",
            "storage.path",
            "sevice",
        ]
    ), done.stderr
    typo = next(line for line in errors if "htttp" in line)
    assert "'http'" in typo  # the suggestion


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("receivers: [\n", "invalid YAML")],
)
def test_validate_reports_unreadable_files(
    tmp_path: Path, content: str | None, message: str
) -> None:
    cfg = tmp_path / "c.yaml"
    if content is not None:
        cfg.write_text(content)
    done = agentledger("validate", "--config", str(cfg))
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr


def _printed_keys(server: Server) -> dict[str, str]:
    return {m[1]: m[2] for line in server.output if (m := KEY_LINE.match(line.rstrip("\n")))}


def _ingest_works(server: Server, key: str) -> bool:
    body = spans_request("cli", 1, seed=1).SerializeToString()
    headers = {"authorization": f"Bearer {key}", "content-type": PROTOBUF}
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        return client.post("/v1/traces", content=body, headers=headers).status_code == 200


def _first_start_then_restart(tmp_path: Path, **options: bool) -> None:
    first = make_server(tmp_path, bootstrap=True, **options).start()
    try:
        keys = _printed_keys(first)
        assert set(keys) == {"admin", "ingest", "read"}, "".join(first.output)
        assert keys["admin"].startswith("al_admin_")
        assert keys["ingest"].startswith("al_live_")
        assert keys["read"].startswith("al_read_")
        banner = "".join(first.output)
        assert f'OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer {keys["ingest"]}"' in banner
        assert f"OTEL_EXPORTER_OTLP_ENDPOINT=http://{first.http}" in banner
        # The protocol is named: an SDK defaulting to gRPC must not be pointed at HTTP.
        assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in banner
        assert (
            f"OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_EXPORTER_OTLP_ENDPOINT=http://{first.grpc}"
            in (banner)
        )
        assert _ingest_works(first, keys["ingest"])
        assert not _ingest_works(first, keys["read"])
    finally:
        assert first.stop() == 0
    for line in first.output:  # each secret appears once, on its banner line only
        for key in keys.values():
            secret = key.rsplit("_", 1)[1]
            assert secret not in line or KEY_LINE.match(line.rstrip()) or "OTEL_" in line

    again = Server(data_dir=first.data_dir, config_path=first.config_path).start()
    try:
        output = "".join(again.output)
        assert _printed_keys(again) == {}, output
        assert all(key.rsplit("_", 1)[1] not in output for key in keys.values())
        assert "<your ingest key>" in output
        assert _ingest_works(again, keys["ingest"])  # the keys are still valid
    finally:
        assert again.stop() == 0
    assert again.query("SELECT org, count(*) FROM spans GROUP BY ALL") == [("default", 1)]


def test_declared_orgs_make_no_default_org(tmp_path: Path) -> None:
    # Issue 20: with orgs in the config, bootstrap (on by default) creates nothing.
    server = make_server(tmp_path, bootstrap=True).start()
    try:
        assert _printed_keys(server) == {}, "".join(server.output)
    finally:
        assert server.stop() == 0
    assert server.query("SELECT name FROM orgs ORDER BY name") == [("acme",), ("globex",)]


def test_first_start_prints_three_keys_once(tmp_path: Path) -> None:
    _first_start_then_restart(tmp_path, orgs=False)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_drain_and_exit_0(tmp_path: Path, sig: signal.Signals) -> None:
    s = make_server(tmp_path).start()
    assert s.proc is not None
    assert _ingest_works(s, "al_live_aaaa0001_" + "1" * 40)
    s.proc.send_signal(sig)
    assert s.stop() == 0
    assert any("stopped" in line for line in s.output)
    assert s.query("SELECT count(*) FROM spans") == [(1,)]
