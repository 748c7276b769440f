"""The container files say what CI tests: the Dockerfile builds, installs, starts and health-checks
through `.ci/entrypoint.sh` (the script CI runs), as a non-root user with data on a volume; the
compose stack mounts files that exist and provisions Grafana where Grafana reads them.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from collector.config import load_config
from collector.registry import validate

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))


def instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_every_image_step_runs_the_ci_entrypoint() -> None:
    runs = " ".join(instructions("RUN"))
    assert "entrypoint.sh build" in runs and "agentledger-entrypoint install" in runs
    assert "COPY .ci/entrypoint.sh /usr/local/bin/agentledger-entrypoint" in DOCKERFILE
    assert instructions("ENTRYPOINT") == [
        '["sh", "/usr/local/bin/agentledger-entrypoint", "serve"]'
    ]
    assert 'agentledger-entrypoint", "health"' in instructions("HEALTHCHECK")[0]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for step in ("entrypoint.sh build", "entrypoint.sh install", "entrypoint.sh\" serve",
                 "entrypoint.sh\" health"):  # fmt: skip
        assert step in ci, step


def test_the_image_runs_unprivileged_with_data_on_a_volume() -> None:
    assert instructions("USER") == ["agentledger"]
    assert instructions("VOLUME") == ['["/var/lib/agentledger"]']
    assert instructions("EXPOSE") == ["4317 4318"]
    assert len(instructions("FROM")) == 2  # a build stage, then the slim runtime


def test_the_configs_the_image_and_the_stack_run_are_valid() -> None:
    container = load_config(ROOT / "config" / "examples" / "container.yaml", {})
    assert validate(container) == []
    http = container.receivers.otlp.protocols.http  # type: ignore[union-attr]
    assert http is not None and http.endpoint == "0.0.0.0:4318"
    keys = {
        "AGENTLEDGER_INGEST_KEY": "al_live_00000001_" + "a" * 40,
        "AGENTLEDGER_READ_KEY": "al_read_00000002_" + "b" * 40,
        "AGENTLEDGER_ADMIN_KEY": "al_admin_00000003_" + "c" * 40,
    }
    stack = load_config(ROOT / "config" / "examples" / "compose.yaml", keys)
    assert validate(stack) == [] and not stack.auth.bootstrap


def test_compose_mounts_existing_files_where_grafana_reads_them() -> None:
    services = COMPOSE["services"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), source
    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    provider = yaml.safe_load((ROOT / "config" / "grafana" / "dashboards.yaml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    dashboards = [target for target in grafana if target.startswith(folder + "/")]
    assert dashboards and grafana[dashboards[0]].endswith("agentledger-dashboard.json")
    assert grafana["/etc/grafana/provisioning/datasources/agentledger.yaml"].endswith(
        "datasource.yaml"
    )
    env = services["grafana"]["environment"]
    assert env["GF_INSTALL_PLUGINS"] == "yesoreyeram-infinity-datasource"
    assert env["AGENTLEDGER_API_URL"] == "http://agentledger:4318"
    assert services["grafana"]["depends_on"]["agentledger"]["condition"] == "service_healthy"
