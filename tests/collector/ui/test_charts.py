"""Tests for `collector/ui/charts.py`: bar heights in proportion, names escaped, series beyond
the palette folded into "other", gaps in lines."""

from __future__ import annotations

import re

from collector.ui.charts import Series, lines, stacked_bars, top_series


def heights(svg: str) -> list[float]:
    return [float(h) for h in re.findall(r'<rect class="s\d" [^>]*height="([\d.]+)"', svg)]


def test_stacked_bars_are_in_proportion_and_name_themselves() -> None:
    svg = str(
        stacked_bars(
            ["a", "b"], [Series("x", [1.0, 2.0]), Series("y", [1.0, 0.0])], title="Runs per day"
        )
    )
    assert svg.startswith("<svg") and 'role="img"' in svg and "<title" in svg
    h = heights(svg)
    assert len(h) == 3  # a zero value draws no segment
    assert abs(h[0] - h[1]) < 0.01 and abs(h[2] - 2 * h[0]) < 0.01
    assert "b · x: 2" in svg  # each segment's tooltip


def test_names_are_escaped() -> None:
    svg = str(stacked_bars(["<b>"], [Series("<script>alert(1)</script>", [1.0])], title="t & u"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "t &amp; u" in svg


def test_top_series_keeps_the_largest_and_sums_the_rest_as_other() -> None:
    rows = [(0, f"w{i}", float(i)) for i in range(1, 9)] + [(10, "w8", 1.0)]
    series = top_series(rows, [0, 10], keep=3)
    assert [s.name for s in series] == ["w8", "w7", "w6", "other"]
    assert list(series[0].values) == [8.0, 1.0]
    assert list(series[-1].values) == [sum(range(1, 6)), 0.0]


def test_a_missing_value_breaks_a_line() -> None:
    svg = str(lines(["a", "b", "c", "d"], [Series("p50", [1.0, 2.0, None, 3.0])], title="t"))
    assert svg.count("<polyline") == 1  # [a, b]; d alone is a point
    assert svg.count("<circle") == 3
