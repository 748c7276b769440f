"""Progress of long command-line work (export, re-pricing, re-derivation) on stderr: a line that
rewrites itself on a terminal, nothing at all when stderr is piped or redirected (scripts, CI).

The CLI creates one `Progress` per job and calls `advance`; the job's final summary is printed
by the command itself on stdout, so piped output holds only that.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`advance(n)` as work is done; `done()` clears the line. Redraws at most 10 times a second."""

    def __init__(self, what: str, total: int | None = None, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._live = self._stream.isatty()
        self._what = what
        self._total = total
        self._count = 0
        self._drawn = 0.0

    @property
    def count(self) -> int:
        return self._count

    def advance(self, n: int = 1) -> None:
        self._count += n
        now = time.monotonic()
        if self._live and now - self._drawn >= 0.1:
            self._drawn = now
            self._draw()

    def done(self) -> None:
        if self._live:
            self._stream.write("\r\033[K")
            self._stream.flush()

    def _draw(self) -> None:
        if self._total:
            share = min(100.0, 100.0 * self._count / self._total)
            text = f"{self._what}: {self._count:,} of {self._total:,} ({share:.0f}%)"
        else:
            text = f"{self._what}: {self._count:,}"
        self._stream.write("\r\033[K" + text)
        self._stream.flush()
