"""The store exporter: hands processed rows to the store's group commit.

Rows come from the pipeline; `export` returns once the DuckLake commit holding them is durable,
which is what lets receivers acknowledge only committed data.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.model import Accepted, Rows
from collector.store.writer import Store


@dataclass(frozen=True)
class StoreExporterConfig:
    """The `store:` exporter has no settings of its own: storage lives under `storage:`."""


class StoreExporter:
    def __init__(self, config: StoreExporterConfig, store: Store) -> None:
        self._store = store

    async def start(self) -> None:
        return None

    async def export(self, rows: Rows) -> Accepted:
        return await self._store.append(rows)

    async def shutdown(self) -> None:
        return None
