"""The heap of a long-running server and its decode workers: hand freed memory back to the OS.

glibc's malloc, and Arrow's buffers routed to it. Called by `collector/cli.py` (the server, at
start), `pipeline.py` (each worker at start, and a trim after large requests); a no-op where the
C library has no `mallopt` or `malloc_trim`.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

MMAP_THRESHOLD_BYTES = 128 * 1024
"""Allocations this big or bigger get pages of their own, unmapped when freed."""

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def return_large_buffers() -> None:
    """Fix glibc's mmap threshold at `MMAP_THRESHOLD_BYTES` (unless MALLOC_MMAP_THRESHOLD_ is
    set: the operator's choice wins).

    By default glibc raises the threshold to the size of each mmapped block freed, up to 32 MiB.
    After the first few request payloads, Arrow IPC messages and DuckDB results of a few
    hundred KiB were freed, later ones of that size came from the heap's arenas instead, and
    the server's RSS settled ~300 MiB above what it held (`docs/benchmarks.md`, issue 21).
    Then routes Arrow's buffers through malloc (`arrow_buffers_from_malloc`).
    """
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt = _libc_symbol("mallopt")
        if mallopt is not None:
            mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    arrow_buffers_from_malloc()


def arrow_buffers_from_malloc() -> None:
    """Allocate Arrow's buffers with the C library's malloc (unless ARROW_DEFAULT_MEMORY_POOL is
    set: the operator's choice wins).

    pyarrow's default pool is its bundled mimalloc, which keeps freed pages for reuse: 200 MiB
    of request-sized buffers freed stayed resident (`tests/collector/test_heap.py`). With malloc
    and the threshold above they are unmapped when freed. In 3-minute soaks this took ~100 MiB
    off the peak RSS of the server and its workers together (`docs/benchmarks.md`, issue 21).
    """
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return
    import pyarrow as pa  # here: importing this module must stay cheap for the CLI's start

    pa.set_memory_pool(pa.system_memory_pool())


def trim_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps what large requests freed in its
    arenas: RSS would stay at its peak). A no-op where there is no malloc_trim."""
    trim = _libc_symbol("malloc_trim")
    if trim is not None:
        trim(0)


@functools.cache
def _libc_symbol(name: str) -> Any:
    # The symbols already loaded into this process (not ctypes.util.find_library, which runs
    # ldconfig in a forked child of this threaded process).
    return getattr(ctypes.CDLL(None), name, None)
