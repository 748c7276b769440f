"""The `agentledger` command: serve, validate, prices (recompute, update), store migrate and
--version.

Reads the config file (or the embedded default) and the environment, then runs the service
until SIGTERM/SIGINT; `validate` prints every config error with its YAML path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from collector import __version__
from collector.configparse import ConfigError
from collector.heap import return_large_buffers

# Each decode worker imports this module again as its `__mp_main__` (multiprocessing's spawn),
# so what only the commands need is imported in them: a worker holds ~60 MiB less.
if TYPE_CHECKING:
    from collector.config import Config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentledger", description="AI-agent telemetry collector")
    p.add_argument("--version", action="version", version=f"agentledger {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the collector")
    serve.add_argument("--config", type=Path, help="YAML config (default: the embedded one)")
    serve.add_argument("--data-dir", type=Path, help="store directory (overrides storage.path)")
    validate = sub.add_parser("validate", help="check a config file and exit")
    validate.add_argument(
        "--config", type=Path, help="YAML config to check (default: the embedded one)"
    )
    validate.add_argument(
        "--connect",
        action="store_true",
        help="also reach a PostgreSQL catalog and an S3 data path (a shared store)",
    )
    store = sub.add_parser("store", help="store jobs")
    store_jobs = store.add_subparsers(dest="job", required=True)
    migrate = store_jobs.add_parser(
        "migrate",
        help="copy a single-node store into an empty shared one (server stopped); "
        "S3 credentials come from storage.s3 of --config",
    )
    migrate.add_argument("--config", type=Path, help="YAML config of the store to copy")
    migrate.add_argument("--data-dir", type=Path, help="store directory (overrides storage.path)")
    migrate.add_argument(
        "--to-catalog", required=True, help='the new catalog, e.g. "postgres:host=db dbname=al"'
    )
    migrate.add_argument(
        "--to-data-path", required=True, help="the new data path, e.g. s3://bucket/agentledger/"
    )
    export_table = sub.add_parser("export", help="write a table's rows of a time window to a file")
    from collector.governance import export

    export.add_arguments(export_table)
    prices = sub.add_parser("prices", help="price book jobs")
    jobs = prices.add_subparsers(dest="job", required=True)
    recompute = jobs.add_parser(
        "recompute", help="re-price stored LLM and tool calls and their runs (server stopped)"
    )
    recompute.add_argument("--config", type=Path, help="YAML config (default: the embedded one)")
    recompute.add_argument("--data-dir", type=Path, help="store directory (overrides storage.path)")
    recompute.add_argument("--org", help="only this org")
    update = jobs.add_parser(
        "update", help="merge an OpenRouter or LiteLLM price list into the operator's price book"
    )
    update.add_argument(
        "--from", dest="source", required=True, help="URL (http, https, file) or path"
    )
    update.add_argument(
        "--out", type=Path, help="book to update (default: prices.path, else the data dir's)"
    )
    update.add_argument("--config", type=Path, help="YAML config (default: the embedded one)")
    update.add_argument("--data-dir", type=Path, help="store directory (overrides storage.path)")
    return p


def _load(path: Path | None, data_dir: Path | None = None) -> Config:
    from collector import registry
    from collector.config import ConfigOverrides, load_config

    config = load_config(path, os.environ, ConfigOverrides(data_dir=data_dir))
    issues = registry.validate(config)
    if issues:
        raise ConfigError(issues)
    return config


# What every LogRecord has; anything else on a record came from the call's `extra=`.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class _JsonFormatter(logging.Formatter):
    """One JSON object per line for log shippers, with the call's `extra=` fields kept."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in body:
                body[key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def _setup_logging(config: Config) -> None:
    logs = config.service.telemetry.logs
    handler = logging.StreamHandler(sys.stderr)
    if logs.format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logs.level.upper())
    # The HTTP client logs each request's full URL, and a user's URL may be the secret itself
    # (a Slack webhook, a token in a query string): ours log `outbound.label(url)` instead.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `agentledger`: say what it can do
        parser.print_help()
        return 0
    try:
        config = _load(args.config, getattr(args, "data_dir", None))
    except ConfigError as e:
        for issue in e.issues:
            print(f"error: {issue}", file=sys.stderr)
        return 2
    if args.command == "validate":
        for notice in config.notices:
            print(f"warning: {notice}", file=sys.stderr)
        if args.connect:
            from collector.store.lake import StoreSettings, probe

            problems = probe(StoreSettings.from_config(config.storage))
            for problem in problems:
                print(f"error: cannot reach the {problem}", file=sys.stderr)
            if problems:
                return 1
        print("ok")
        return 0
    if args.command == "store":
        return _migrate(config, args.to_catalog, args.to_data_path)
    if args.command == "export":
        from collector.governance import export
        from collector.store.lake import StoreSettings

        return export.run_cli(args, StoreSettings.from_config(config.storage), os.environ)
    if args.command == "prices" and args.job == "update":
        return _update_prices(args.source, args.out or _operator_book(config))
    if args.command == "prices":
        return _recompute(config, args.org)
    _setup_logging(config)
    for notice in config.notices:
        logging.getLogger("agentledger").warning("config: %s", notice)
    return_large_buffers()  # before the first large buffer: a server runs for months
    return asyncio.run(_serve(config))


def _recompute(config: Config, org: str | None) -> int:
    import duckdb

    from collector import registry
    from collector.prices.reprice import reprice
    from collector.progress import Progress
    from collector.runs.recost import RunTotals
    from collector.store.lake import StoreSettings, connect

    parts = registry.components(config)
    cost = registry.build_processor(parts, "cost")
    if cost is None:
        print("error: no cost processor is configured", file=sys.stderr)
        return 2
    try:
        con = connect(StoreSettings.from_config(config.storage))
    except duckdb.IOException as e:
        print(f"error: cannot open the store (is the server running?): {e}", file=sys.stderr)
        return 1
    con.execute("USE lake")
    progress = Progress("re-pricing LLM and tool calls")
    try:
        result = reprice(con, cost, RunTotals(registry.runs_config(parts)), org, progress=progress)
    finally:
        progress.done()
        con.close()
    print(
        f"re-priced {result.examined} LLM and tool calls; {result.changed} changed; "
        f"totals of {result.runs} runs updated"
    )
    for line in result.report():
        print(line)
    return 0


def _migrate(config: Config, catalog: str, data_path: str) -> int:
    from dataclasses import replace

    import duckdb

    from collector.store.lake import CatalogUnreachable, StoreSettings, hide_secrets
    from collector.store.migrate import MigrateRefused, migrate

    source = StoreSettings.from_config(config.storage)
    target_storage = replace(config.storage, catalog=catalog, data_path=data_path)
    issues = target_storage.validate()
    for issue in issues:
        print(f"error: --to {issue}", file=sys.stderr)
    if issues:
        return 2
    target = StoreSettings.from_config(target_storage)
    try:
        result = migrate(source, target)
    except (MigrateRefused, CatalogUnreachable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except duckdb.Error as e:
        print(f"error: the copy failed: {hide_secrets(str(e), target)}", file=sys.stderr)
        return 1
    for table, (before, after) in sorted(result.counts.items()):
        mark = "" if before == after else "  MISMATCH"
        print(f"{table}: {before} -> {after}{mark}")
    if not result.matches:
        print("error: row counts differ; do not switch to the new store", file=sys.stderr)
        return 1
    print(
        f"copied {len(result.counts)} tables; every row count matches. Every node of the new "
        "store needs secrets.key: the key of this store is in "
        f"{Path(config.storage.path) / 'secret.key'} unless secrets.key was set"
    )
    return 0


def _operator_book(config: Config) -> Path:
    """Where `prices update` writes: the configured book, else the data directory's, which the
    service reads (never the shipped book inside the installed package)."""
    from collector.prices.feed import OPERATOR_FILE

    return Path(config.prices.path or Path(config.storage.path, OPERATOR_FILE))


def _update_prices(source: str, out: Path) -> int:
    """Fetch, convert, merge and validate everything before the book file is replaced."""
    from datetime import UTC, datetime

    from collector.prices import importers as priceimport
    from collector.prices.feed import EMPTY_BOOK
    from collector.prices.fetch import fetch, write_atomically

    try:
        converted = priceimport.convert(json.loads(fetch(source)))
        text = out.read_text(encoding="utf-8") if out.exists() else EMPTY_BOOK
        book = json.loads(text)
        out.parent.mkdir(parents=True, exist_ok=True)
        merged = priceimport.merge(book, converted.entries, datetime.now(UTC).date())
        write_atomically(out, priceimport.dumps_book(merged.book))
    except (OSError, ValueError) as e:  # URLError is an OSError, JSONDecodeError a ValueError
        print(f"error: price book not updated: {e}", file=sys.stderr)
        return 1
    print(
        f"{out}: version {merged.book['version']}; {merged.updated} updated, "
        f"{merged.added} added, {len(converted.skipped)} source entries skipped"
    )
    return 0


async def _serve(config: Config) -> int:
    from collector.service import run

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(config, sys.stdout, stop)
    except OSError as e:
        logging.getLogger("agentledger").error("cannot start: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
