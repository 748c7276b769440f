"""Export: one table's rows of a time window as Parquet, CSV or JSON lines, streamed in batches.

`agentledger export` calls `export_table` on the store opened read-only (server stopped) or asks
the running server's `GET /api/export` (admin key; its org only), which calls the same function.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute

from collector.api import schema as sc
from collector.api.apis import ADMIN
from collector.api.params import TIME, Param, parse_time
from collector.api.routes import Call, Keys, Operation, routes
from collector.auth.keys import Authenticator
from collector.errors import ApiError
from collector.governance.retention import KINDS, Target, cutoff_value
from collector.progress import Progress
from collector.store.lake import LAKE, StoreSettings, connect
from collector.store.writer import Store

FORMATS = ("parquet", "csv", "jsonl")
MEDIA = {
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
    "jsonl": "application/jsonl",
}
_BATCH = 65_536

# Every table retention knows, by the time its rows are filtered on (whatever the kind).
TABLES: dict[str, Target] = {}
for _targets in KINDS.values():
    for _t in _targets:
        TABLES.setdefault(_t.table, Target(_t.table, _t.time, _t.unit))


@dataclass(frozen=True)
class ExportRequest:
    table: str
    start: datetime
    end: datetime
    fmt: str
    org: str | None = None

    def problems(self) -> list[dict[str, str]]:
        out = []
        if self.table not in TABLES:
            out.append({"field": "table", "message": f"must be one of {', '.join(TABLES)}"})
        if self.fmt not in FORMATS:
            out.append({"field": "format", "message": f"must be one of {', '.join(FORMATS)}"})
        if self.start > self.end:
            out.append({"field": "from", "message": "must not be after `to`"})
        return out


def export_table(
    cur: duckdb.DuckDBPyConnection,
    req: ExportRequest,
    path: str,
    progress: Progress | None = None,
) -> int:
    """Write the rows with `from <= time < to` (and of `org`, if given) to `path`; returns the
    row count. Memory stays at one batch: rows stream from DuckDB to the file writer."""
    target = TABLES[req.table]
    sql = f"SELECT * FROM {LAKE}.{req.table} WHERE {target.time} >= ? AND {target.time} < ?"
    params: list[Any] = [cutoff_value(target, req.start), cutoff_value(target, req.end)]
    if req.org is not None:
        sql += " AND org = ?"
        params.append(req.org)
    reader = cur.execute(sql + f" ORDER BY {target.time}", params).fetch_record_batch(_BATCH)
    count = 0
    writer: Any = None
    with open(path, "wb") as sink:
        if req.fmt == "parquet":
            writer = pq.ParquetWriter(sink, reader.schema)
        elif req.fmt == "csv":
            writer = pacsv.CSVWriter(sink, reader.schema)
        for batch in reader:
            count += batch.num_rows
            if progress is not None:
                progress.advance(batch.num_rows)
            if req.fmt == "jsonl":
                lines = (json.dumps(row, default=_json_default) for row in batch.to_pylist())
                sink.write("".join(line + "\n" for line in lines).encode())
            else:
                writer.write_batch(batch)
        if writer is not None:
            writer.close()
    return count


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


class ExportApi:
    """`GET /api/export?table=&from=&to=&format=` — the admin key's org only."""

    def __init__(self, store: Store, auth: Authenticator) -> None:
        self._store = store
        self._auth = auth

    def routes(self) -> list[BaseRoute]:
        return routes(self.operations())

    def operations(self) -> list[Operation]:
        return [
            Operation(
                ADMIN,
                "GET",
                "/api/export",
                self._export,
                "One table's rows of the org in a time window, as a file",
                Keys(self._auth, ("admin",)),
                params=(
                    Param("table", sc.enum(tuple(TABLES)), required=True),
                    Param("from", TIME, "inclusive start", required=True),
                    Param("to", TIME, "exclusive end", required=True),
                    Param("format", sc.enum(FORMATS, default="parquet")),
                ),
                media=MEDIA["parquet"],
            )
        ]

    async def _export(self, call: Call) -> Response:
        q = call.request.query_params
        problems = []
        times = {}
        for name in ("from", "to"):
            parsed = parse_time(q.get(name, ""))
            if parsed is None:
                problems.append({"field": name, "message": "must be an ISO 8601 date-time"})
            times[name] = parsed
        if problems:
            raise ApiError(422, "validation_error", "Invalid export request", problems)
        assert times["from"] is not None and times["to"] is not None
        req = ExportRequest(
            q.get("table", ""), times["from"], times["to"], q.get("format", "parquet"), call.org
        )
        if problems := req.problems():
            raise ApiError(422, "validation_error", "Invalid export request", problems)
        fd, path = tempfile.mkstemp(prefix="agentledger-export-", suffix=f".{req.fmt}")
        os.close(fd)
        cur = self._store.cursor()
        try:
            count = await asyncio.to_thread(export_table, cur, req, path)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            cur.close()
        return FileResponse(
            path,
            media_type=MEDIA[req.fmt],
            headers={"X-Row-Count": str(count), "X-Org": req.org or ""},
            background=BackgroundTask(os.unlink, path),
        )


# -- the `agentledger export` command ---------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", required=True, help=f"one of {', '.join(TABLES)}")
    p.add_argument("--from", dest="start", required=True, help="ISO 8601 (inclusive)")
    p.add_argument("--to", dest="end", required=True, help="ISO 8601 (exclusive)")
    p.add_argument(
        "--format", dest="fmt", choices=FORMATS, default="parquet", help="file format (parquet)"
    )
    p.add_argument("--output", required=True, type=Path, help="the file to write")
    p.add_argument("--org", help="only this org (default: all; a server export: the key's org)")
    p.add_argument("--config", type=Path, help="YAML config (default: the embedded one)")
    p.add_argument("--data-dir", type=Path, help="store directory (overrides storage.path)")
    p.add_argument(
        "--server",
        help="base URL of the running server (e.g. http://127.0.0.1:4318): export through it "
        "with an admin key (--key or $AGENTLEDGER_ADMIN_KEY) while it holds the store",
    )
    p.add_argument("--key", help="admin key for --server (default: $AGENTLEDGER_ADMIN_KEY)")


def run_cli(args: argparse.Namespace, settings: StoreSettings, env: Mapping[str, str]) -> int:
    start, end = parse_time(args.start), parse_time(args.end)
    if start is None or end is None:
        print("error: --from and --to must be ISO 8601 date-times", file=sys.stderr)
        return 2
    req = ExportRequest(args.table, start, end, args.fmt, args.org)
    if problems := req.problems():
        for p in problems:
            print(f"error: --{p['field']}: {p['message']}", file=sys.stderr)
        return 2
    if args.server:
        return _via_server(args, req, args.key or env.get("AGENTLEDGER_ADMIN_KEY", ""))
    try:
        con = connect(settings, read_only=True)
    except duckdb.IOException as e:
        print(
            f"error: cannot open the store read-only ({e}).\nWhile the server runs it holds "
            "the catalog: pass --server http://HOST:PORT and an admin key (--key).",
            file=sys.stderr,
        )
        return 1
    progress = Progress(f"exporting {req.table}")
    try:
        count = export_table(con, req, str(args.output), progress)
    finally:
        progress.done()
        con.close()
    print(f"{count} rows of {req.table} written to {args.output}")
    return 0


def _via_server(args: argparse.Namespace, req: ExportRequest, key: str) -> int:
    if not key:
        print(
            "error: --server needs an admin key (--key or AGENTLEDGER_ADMIN_KEY)", file=sys.stderr
        )
        return 2
    query = urllib.parse.urlencode(
        {"table": req.table, "from": req.start.isoformat(), "to": req.end.isoformat(),
         "format": req.fmt}
    )  # fmt: skip
    url = f"{args.server.rstrip('/')}/api/export?{query}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            org = response.headers.get("X-Org", "")
            if req.org is not None and org and org != req.org:
                print(f"error: the key belongs to org {org!r}, not {req.org!r}", file=sys.stderr)
                return 2
            with open(args.output, "wb") as out:
                shutil.copyfileobj(response, out)
            count = response.headers.get("X-Row-Count", "?")
    except urllib.error.HTTPError as e:
        print(f"error: the server answered {e.code}: {e.read()[:500].decode()}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot reach {args.server}: {e}", file=sys.stderr)
        return 1
    print(f"{count} rows of {req.table} written to {args.output}")
    return 0
