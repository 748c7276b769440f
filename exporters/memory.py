"""An in-memory exporter for tests: keeps every `Rows` it is given.

Configured as `memory:` in a pipeline; tests read `.received` to see what the pipeline emitted.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.model import Accepted, Rows


@dataclass(frozen=True)
class MemoryExporterConfig:
    """No settings."""


class MemoryExporter:
    def __init__(self, config: MemoryExporterConfig) -> None:
        self.received: list[Rows] = []

    async def start(self) -> None:
        return None

    async def export(self, rows: Rows) -> Accepted:
        self.received.append(rows)
        return Accepted(rows.count, 0, rows.rejected)

    async def shutdown(self) -> None:
        return None
