"""Strict tooling as part of the suite: ruff (lint + format) and mypy --strict stay clean.

Runs the tools the test extras install, over the three packages, tests and bench.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["collector", "processors", "exporters", "tests", "bench"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_ruff_lint_and_format_are_clean() -> None:
    # `python -m ruff`: the venv's ruff, whether or not the venv's bin is on PATH.
    pytest.importorskip("ruff")
    lint = _run(sys.executable, "-m", "ruff", "check", *PATHS)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run(sys.executable, "-m", "ruff", "format", "--check", *PATHS)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict_is_clean() -> None:
    pytest.importorskip("mypy")
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr
