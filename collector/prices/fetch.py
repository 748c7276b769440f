"""Fetching a published list (prices, FX rates) from a configured URL on a schedule, and keeping
the last good copy in the data directory.

Used by `feed.py` (the price book), `fx.py` (reference FX rates) and `agentledger prices update`:
bounded reads of http(s)/file URLs, atomic writes, URLs logged without credentials, and when
the next fetch is due after a good or a failed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.telemetry import Metrics

log = logging.getLogger(__name__)

FETCH_LIMIT = 50 * 1024 * 1024
CHECK_S = 60.0  # the longest a feed sleeps between two looks (at files, at the schedule)


def fetch(source: str, timeout: float = 30.0, limit: int = FETCH_LIMIT) -> bytes:
    """The body at an http(s)/file URL or a plain path, at most `limit` bytes; OSError (an
    HTTP error status too) or ValueError when it cannot be had."""
    if "://" not in source:
        source = Path(source).resolve().as_uri()
    if not source.startswith(("http://", "https://", "file://")):
        raise ValueError(f"{redact_url(source)}: only http, https and file URLs are supported")
    with urllib.request.urlopen(source, timeout=timeout) as response:
        body: bytes = response.read(limit + 1)
    if len(body) > limit:
        raise ValueError(f"{redact_url(source)}: larger than {limit // (1024 * 1024)} MiB")
    return body


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` (fsynced first): readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def keep(path: Path, state: dict[str, Any]) -> None:
    """Write a feed's state (what was fetched from where, and when) durably."""
    path.parent.mkdir(parents=True, exist_ok=True)  # e.g. a catalog kept elsewhere
    write_atomically(path, json.dumps(state))


def read_state(path: str | Path | None) -> dict[str, Any] | None:
    """A feed's kept state, or None when there is none (or it cannot be read: logged)."""
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cannot read the kept state %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def redact_url(url: str) -> str:
    """scheme://host/path: no credentials or query (an API key may ride in either)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass
class Schedule:
    """When `url` is fetched next: `refresh_s` after a good fetch, `retry_s` after a failed one.
    Counts outcomes in `<metric>_refreshes_total{result}` and shows the last good fetch in
    `<metric>_last_success_timestamp_seconds`; `what` names the list in log lines."""

    url: str | None
    refresh_s: float
    retry_s: float
    metrics: Metrics
    metric: str
    what: str
    last_success: float = 0.0
    next_at: float = 0.0

    def __post_init__(self) -> None:
        self.metrics.describe(f"{self.metric}_refreshes_total", "counter", f"{self.what} fetches")
        self.metrics.gauge(
            f"{self.metric}_last_success_timestamp_seconds",
            f"when the {self.what} was last fetched and used (0: never)",
            lambda: self.last_success,
        )

    @property
    def every(self) -> float:
        """How often a feed on this schedule looks whether something is due."""
        return min(CHECK_S, self.refresh_s, self.retry_s)

    def kept(self, fetched_at: float) -> None:
        """A copy fetched at `fetched_at` is in use (after a restart): not due before its time,
        so restarts do not hammer the source."""
        self.last_success = fetched_at
        self.next_at = fetched_at + self.refresh_s

    def due(self, now: float) -> bool:
        return self.url is not None and now >= self.next_at

    def attempt(self, now: float, work: Callable[[], str], keeping: str) -> str:
        """Run `work` (fetch and use; returns "updated" or "unchanged"). A failure (OSError,
        ValueError) changes nothing but the schedule: it is logged with the URL redacted and
        what stays in use (`keeping`), counted, and retried after `retry_s`."""
        try:
            result = work()
        except (OSError, ValueError) as exc:  # URLError/HTTPError are OSErrors
            self.metrics.inc(f"{self.metric}_refreshes_total", result="failed")
            self.next_at = now + min(self.retry_s, self.refresh_s)
            log.warning(
                "%s fetch from %s failed (%s); keeping %s",
                self.what, redact_url(self.url or ""), exc, keeping,
            )  # fmt: skip
            return "failed"
        self.last_success = now
        self.next_at = now + self.refresh_s
        self.metrics.inc(f"{self.metric}_refreshes_total", result=result)
        return result


async def tick_forever(tick: Callable[[], object], every: float, stop: asyncio.Event) -> None:
    """Call `tick` (blocking, in a thread) every `every` seconds until `stop` is set; a tick
    that raises is logged, never fatal."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(tick)
        except Exception:
            log.exception("scheduled refresh failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def label(value: str) -> str:
    """`value` as a Prometheus label value."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
