"""Acknowledged means durable: SIGKILL under load loses no acknowledged span and doubles none."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.e2e.server import KEYS, Server, make_server
from tests.otlp_factory import request_of

HEADERS = {
    "content-type": "application/x-protobuf",
    "authorization": f"Bearer {KEYS[('acme', 'ingest')]}",
}


async def _load(server: Server, payloads: list[bytes], acked: list[int], stop_after: int) -> None:
    """Send payloads from 6 concurrent clients; record which ones got a 200."""
    queue = list(enumerate(payloads))

    async def client() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while queue:
                i, body = queue.pop(0)
                try:
                    r = await http.post(
                        f"{server.base_url}/v1/traces", content=body, headers=HEADERS
                    )
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    acked.append(i)
                if len(acked) >= stop_after:
                    return

    await asyncio.gather(*(client() for _ in range(6)))


def test_sigkill_under_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    payloads = [request_of(256, seed=1000 + i).SerializeToString() for i in range(60)]
    server = make_server(tmp_path).start()
    acked: list[int] = []

    async def kill_midway() -> None:
        load = asyncio.create_task(_load(server, payloads, acked, stop_after=10**9))
        while len(acked) < 8:
            await asyncio.sleep(0.005)
        server.kill()  # SIGKILL, with requests in flight
        await load

    asyncio.run(kill_midway())
    assert 8 <= len(acked) < len(payloads), "the kill should land mid-load"

    # Restart on the same data: every acknowledged span is there, none twice.
    server = Server(server.data_dir, server.config_path).start()
    acked_spans = 256 * len(set(acked))
    server.stop()
    total, distinct = server.query(
        "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans"
    )[0]
    assert total == distinct
    assert total >= acked_spans
    # Exporters retry what they did not see acknowledged (and sometimes what they did):
    # resending every payload after the restart must not double a single span.
    server = Server(server.data_dir, server.config_path).start()
    retry: list[int] = []
    asyncio.run(_load(server, payloads, retry, stop_after=10**9))
    assert sorted(retry) == list(range(len(payloads)))
    time.sleep(0.1)
    server.stop()
    total, distinct = server.query(
        "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans"
    )[0]
    assert (total, distinct) == (256 * len(payloads), 256 * len(payloads))
