"""Tests for `collector/progress.py`: a live line on a terminal, silence when piped."""

from __future__ import annotations

import io

from collector.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_sees_the_count_and_then_a_cleared_line() -> None:
    out = Terminal()
    progress = Progress("exporting spans", total=200, stream=out)
    progress.advance(50)
    assert out.getvalue().endswith("exporting spans: 50 of 200 (25%)")
    progress.done()
    assert out.getvalue().endswith("\r\033[K")
    assert progress.count == 50


def test_a_pipe_sees_nothing() -> None:
    out = io.StringIO()
    progress = Progress("exporting spans", stream=out)
    for _ in range(1000):
        progress.advance(10)
    progress.done()
    assert out.getvalue() == "" and progress.count == 10_000
