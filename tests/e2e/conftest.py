"""Fixtures for end-to-end tests: a real server per test on free ports, stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import Server, make_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = make_server(tmp_path).start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.stop()
