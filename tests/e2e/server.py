"""Starts a real `agentledger serve` in a subprocess on free ports, for end-to-end tests.

Tests get the endpoints and the declared keys of two orgs; `stop()` sends SIGTERM (a drain),
`kill()` sends SIGKILL. `open_store()` reads the data directory once the server has stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from collector.store.lake import StoreSettings, connect

ROOT = Path(__file__).resolve().parents[2]


def agentledger_command() -> list[str]:
    """How the tests start agentledger: the console script installed beside this Python, which
    is what users run (in CI, from the built wheel); the module only in a checkout without one."""
    script = shutil.which("agentledger", path=str(Path(sys.executable).parent))
    if script:
        return [script]
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI runs the installed console script, and there is none here")
    return [sys.executable, "-m", "collector.cli"]


KEYS = {
    ("acme", "ingest"): "al_live_aaaa0001_" + "1" * 40,
    ("acme", "read"): "al_read_aaaa0002_" + "2" * 40,
    ("acme", "admin"): "al_admin_aaaa0003_" + "3" * 40,
    ("globex", "ingest"): "al_live_bbbb0001_" + "4" * 40,
    ("globex", "read"): "al_read_bbbb0002_" + "5" * 40,
    ("globex", "admin"): "al_admin_bbbb0003_" + "6" * 40,
}


def config_yaml(
    data_dir: Path,
    extra: str = "",
    workers: int = 1,
    bootstrap: bool = False,
    *,
    grpc: str = "",
    http: str = "",
    storage: str = "",
    limits: str = "",
    orgs: bool = True,
    org_settings: dict[str, str] | None = None,
) -> str:
    """The test config. `grpc`, `http`, `storage` and `limits` are more entries of those
    sections' flow mappings (e.g. `grpc="max_recv_msg_size_mib: 1"`); `orgs=False` declares
    no orgs (a store that only the bootstrap provisions); `org_settings` maps an org to its
    `settings:` flow mapping; `extra` is appended as more YAML."""

    def more(entries: str) -> str:
        return f", {entries}" if entries else ""

    declared = []
    for org in ("acme", "globex") if orgs else ():
        keys = ", ".join(
            f'{{scope: {scope}, key: "{KEYS[(org, scope)]}"}}'
            for scope in ("ingest", "read", "admin")
        )
        own = (org_settings or {}).get(org)
        settings = f", settings: {own}" if own else ""
        declared.append(f"    - {{name: {org}, keys: [{keys}]{settings}}}")
    return (
        "receivers:\n  otlp:\n    protocols:\n"
        f'      grpc: {{endpoint: "127.0.0.1:0"{more(grpc)}}}\n'
        f'      http: {{endpoint: "127.0.0.1:0"{more(http)}}}\n'
        f'storage: {{path: "{data_dir}"{more(storage)}}}\n'
        f"limits: {{decode_workers: {workers}{more(limits)}}}\n"
        f"auth:\n  bootstrap: {str(bootstrap).lower()}\n"
        + ("  orgs:\n" + "\n".join(declared) + "\n" if declared else "")
        + extra
    )


@dataclass
class Server:
    data_dir: Path
    config_path: Path
    proc: subprocess.Popen[str] | None = None
    grpc: str = ""
    http: str = ""
    api: str = ""
    output: list[str] = field(default_factory=list)
    command: list[str] | None = None
    """How to start it, before `serve --config`-less arguments: None is `agentledger serve
    --config <config_path>`; given, it is run as is with `env` (the container entrypoint)."""
    env: dict[str, str] = field(default_factory=dict)
    _reader: threading.Thread = field(default_factory=threading.Thread)

    @property
    def base_url(self) -> str:
        return f"http://{self.http}"

    @property
    def api_url(self) -> str:
        return f"http://{self.api}"

    def start(self, timeout: float = 60.0) -> Server:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        command = self.command or [
            *agentledger_command(),
            "serve",
            "--config",
            str(self.config_path),
        ]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.data_dir.parent,  # outside the checkout, as a user's shell would be
            env=env,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                m = re.match(r"ready: grpc=(\S+) http=(\S+) api=(\S+)", line)
                if m:
                    self.grpc, self.http, self.api = m.groups()
                    ready.set()
            self.proc.stdout.close()

        self._reader = threading.Thread(target=pump, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("server did not start:\n" + "".join(self.output))
        return self

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the server drains and exits 0."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
            self._reader.join(10)
            return code
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._reader.join(10)

    def open_store(self) -> duckdb.DuckDBPyConnection:
        """The store, opened in this process (only while the server is not running)."""
        settings = StoreSettings(
            catalog=str(self.data_dir / "catalog.ducklake"), data_path=str(self.data_dir / "data")
        )
        con = connect(settings)
        con.execute("USE lake")
        return con

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        con = self.open_store()
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()


def make_server(
    tmp: Path,
    extra: str = "",
    workers: int = 1,
    bootstrap: bool = False,
    **sections: Any,
) -> Server:
    """A server (not started yet) in `tmp`; `sections` are `config_yaml`'s keyword options."""
    data = tmp / "data"
    cfg = tmp / "agentledger.yaml"
    cfg.write_text(config_yaml(data, extra, workers, bootstrap, **sections))
    return Server(data_dir=data, config_path=cfg)
