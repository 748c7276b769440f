"""Tests for `collector/heap.py`: a fixed mmap threshold, and Arrow's buffers from malloc, give
freed large buffers back to the OS, where glibc's moving threshold and Arrow's own pool kept
them. Each case runs in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's malloc only",
)

# Each program starts so: `return_large_buffers()` in mode "fixed", and a reader of RSS.
_PRELUDE = textwrap.dedent(
    """
    import sys
    from collector.heap import return_large_buffers

    def rss_mib():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

    if sys.argv[1] == "fixed":
        return_large_buffers()
    """
)

# A server's pattern: one large block freed (glibc then raises its threshold to that size), then
# many request-sized buffers held at once and freed while small blocks allocated between them
# stay. Prints how much of the buffers' memory RSS still holds after they are freed, in MiB.
_PROGRAM = _PRELUDE + textwrap.dedent(
    """
    first = bytearray(16 << 20)
    del first
    before = rss_mib()
    buffers, pinned = [], []
    for _ in range(400):  # 200 MiB, touched, each followed by a small block that stays
        buffers.append(bytearray(512 << 10))
        pinned.append(bytearray(2048))
    held = rss_mib() - before
    del buffers
    print(round(rss_mib() - before), round(held))
    """
)


def _printed(program: str, mode: str, env: dict[str, str] | None) -> list[str]:
    return subprocess.run(
        [sys.executable, "-c", program, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout.split()


def _kept_mib(mode: str, env: dict[str, str] | None = None) -> tuple[int, int]:
    out = _printed(_PROGRAM, mode, env)
    return int(out[0]), int(out[1])


def test_freed_request_buffers_leave_rss_with_the_fixed_threshold() -> None:
    kept, held = _kept_mib("fixed")
    assert held >= 190  # the buffers were resident
    assert kept < 20


def test_glibcs_moving_threshold_keeps_them_which_is_why() -> None:
    kept, held = _kept_mib("default")
    assert held >= 190
    assert kept > 150


def test_an_operators_malloc_setting_wins() -> None:
    # MALLOC_MMAP_THRESHOLD_ set (here: 32 MiB, above the buffers) is left as it is.
    kept, _ = _kept_mib("fixed", {"MALLOC_MMAP_THRESHOLD_": str(32 << 20)})
    assert kept > 150


# The same pattern through Arrow: request-sized column buffers allocated by a compute kernel,
# held at once, then freed. Prints the pool's backend, then the MiB kept and held.
_ARROW_PROGRAM = _PRELUDE + textwrap.dedent(
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    print(pa.default_memory_pool().backend_name)
    base = pa.array(np.arange(64 * 1024, dtype=np.int64))  # 512 KiB
    before = rss_mib()
    buffers = [pc.add(base, i) for i in range(400)]  # 200 MiB from the pool
    held = rss_mib() - before
    del buffers
    print(round(rss_mib() - before), round(held))
    """
)


def _arrow_kept_mib(mode: str, env: dict[str, str] | None = None) -> tuple[str, int, int]:
    out = _printed(_ARROW_PROGRAM, mode, env)
    return out[0], int(out[1]), int(out[2])


def test_freed_arrow_buffers_leave_rss() -> None:
    backend, kept, held = _arrow_kept_mib("fixed")
    assert backend == "system"
    assert held >= 190
    assert kept < 20


def test_arrows_own_pool_keeps_them_which_is_why() -> None:
    backend, kept, held = _arrow_kept_mib("default")
    assert backend != "system"
    assert held >= 190
    assert kept > 150


def test_an_operators_arrow_pool_wins() -> None:
    default = _arrow_kept_mib("default")[0]
    backend, _, _ = _arrow_kept_mib("fixed", {"ARROW_DEFAULT_MEMORY_POOL": default})
    assert backend == default
