"""The start-up banner of `agentledger serve`: the endpoints, a first start's keys, `ready:`.

Written to the service's output stream once the listeners are up; the keys are never logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

from collector import __version__
from collector.model import Scope


@dataclass
class Endpoints:
    grpc: str | None = None
    http: str | None = None
    api: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def print_ready(
    out: TextIO, data_path: str, e: Endpoints, keys: Mapping[Scope, str] | None
) -> None:
    """Where to send what, the first start's keys (shown once), then the `ready:` line that
    scripts and tests wait for."""
    print(f"agentledger {__version__} — data in {data_path}", file=out)
    if e.grpc:
        print(f"  OTLP/gRPC   {e.grpc}", file=out)
    if e.http:
        print(
            f"  OTLP/HTTP   http://{e.http}" + ("" if e.api else "  (also the JSON APIs)"),
            file=out,
        )
    if e.api:
        print(f"  JSON APIs   http://{e.api}", file=out)
    for name, address in e.extra.items():  # the metrics listener, health_check extensions
        print(f"  {name:<11} http://{address}", file=out)
    ingest = "<your ingest key>"
    if keys:
        ingest = keys["ingest"]
        print(
            '\nFirst start: created org "default". These keys are shown once, never again:',
            file=out,
        )
        for scope in ("admin", "ingest", "read"):
            print(f"  {scope:<7} {keys[scope]}", file=out)
    if e.http or e.grpc:
        # SDKs default to grpc in some languages and http/protobuf in others: name it, so an
        # SDK given the HTTP endpoint never speaks gRPC to it.
        print("\nPoint an OpenTelemetry SDK at it:", file=out)
        if e.http:
            print("  export OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", file=out)
            print(f"  export OTEL_EXPORTER_OTLP_ENDPOINT=http://{e.http}", file=out)
        else:
            print("  export OTEL_EXPORTER_OTLP_PROTOCOL=grpc", file=out)
            print(f"  export OTEL_EXPORTER_OTLP_ENDPOINT=http://{e.grpc}", file=out)
        print(f'  export OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer {ingest}"', file=out)
        if e.http and e.grpc:
            print(
                "  (or gRPC: OTEL_EXPORTER_OTLP_PROTOCOL=grpc "
                f"OTEL_EXPORTER_OTLP_ENDPOINT=http://{e.grpc})",
                file=out,
            )
    print(
        f"ready: grpc={e.grpc or '-'} http={e.http or '-'} api={e.api or e.http or '-'}",
        file=out,
        flush=True,
    )
