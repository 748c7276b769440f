"""Small charts drawn on the server as inline SVG: stacked bars per time bucket and lines.

Pages hand in bucket labels and named series (from `collector/read/metrics.py`); the SVG needs no
script, scales with its container, names itself for screen readers, and gives every bar and point
a tooltip (`<title>`). Colours come from the stylesheet (classes `s0`…`s5`), not inline styles.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

PALETTE = 6  # series classes s0..s5 in static/ui.css; more series share the last ("other")
_W, _H = 480, 170  # the viewBox; the SVG itself is as wide as its container
_LEFT, _BOTTOM, _TOP = 62, 22, 10


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per label; None: no value (a gap in a line)


def _frame(title: str, desc: str, body: list[str]) -> Markup:
    ident = f"c{zlib.crc32((title + desc).encode()):08x}"
    return Markup(
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-labelledby="{ident}t {ident}d" preserveAspectRatio="xMidYMid meet">'
        f'<title id="{ident}t">{escape(title)}</title><desc id="{ident}d">{escape(desc)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def _axes(labels: Sequence[str], top: float, fmt: Callable[[float], str]) -> list[str]:
    plot_h = _H - _BOTTOM - _TOP
    out = [
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_W}" y2="{_TOP + plot_h}"/>',
        f'<text class="tick" x="{_LEFT - 4}" y="{_TOP + 10}" text-anchor="end">'
        f"{escape(fmt(top))}</text>",
        f'<text class="tick" x="{_LEFT - 4}" y="{_TOP + plot_h}" text-anchor="end">'
        f"{escape(fmt(0))}</text>",
        f'<line class="grid" x1="{_LEFT}" y1="{_TOP}" x2="{_W}" y2="{_TOP}"/>',
    ]
    if labels:
        n = len(labels)
        step = (_W - _LEFT) / n
        shown = sorted({0, n // 2, n - 1})
        for i in shown:
            x = _LEFT + step * (i + 0.5)
            anchor = "start" if i == 0 and n > 1 else ("end" if i == n - 1 and n > 1 else "middle")
            if anchor == "start":
                x = _LEFT
            elif anchor == "end":
                x = _W
            out.append(
                f'<text class="tick" x="{x:.1f}" y="{_H - 6}" text-anchor="{anchor}">'
                f"{escape(labels[i])}</text>"
            )
    return out


def _nice(top: float) -> float:
    """The y axis' top: the data's maximum rounded up to 1, 2, 2.5 or 5 times a power of ten."""
    if top <= 0:
        return 1.0
    power = 10.0 ** _floor_log10(top)
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if top <= m * power:
            return m * power
    return 10 * power


def _floor_log10(x: float) -> int:
    n = 0
    while x >= 10:
        x /= 10
        n += 1
    while x < 1:
        x *= 10
        n -= 1
    return n


def stacked_bars(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    fmt: Callable[[float], str] = lambda v: f"{v:g}",
) -> Markup:
    """One bar per label, the series stacked in order (the first at the bottom)."""
    totals = [sum(v or 0.0 for v in vals) for vals in zip(*(s.values for s in series), strict=True)]
    top = _nice(max(totals, default=0.0))
    plot_h = _H - _BOTTOM - _TOP
    n = max(len(labels), 1)
    step = (_W - _LEFT) / n
    bar_w = max(step * 0.8, 1.0)
    body = _axes(labels, top, fmt)
    for i, label in enumerate(labels):
        y = float(_TOP + plot_h)
        x = _LEFT + step * i + (step - bar_w) / 2
        for k, s in enumerate(series):
            v = s.values[i] or 0.0
            if v <= 0:
                continue
            h = v / top * plot_h
            y -= h
            tip = f"{label} · {s.name}: {fmt(v)}"
            body.append(
                f'<rect class="s{min(k, PALETTE - 1)}" x="{x:.2f}" y="{y:.2f}" '
                f'width="{bar_w:.2f}" height="{max(h, 0.5):.2f}">'
                f"<title>{escape(tip)}</title></rect>"
            )
    highest = max(totals, default=0.0)
    desc = f"{len(labels)} bars, {len(series)} series; total {fmt(sum(totals))}, "
    desc += f"highest {fmt(highest)}"
    return _frame(title, desc, body)


def lines(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    fmt: Callable[[float], str] = lambda v: f"{v:g}",
) -> Markup:
    """One polyline per series over the labels; a None value breaks the line."""
    values = [v for s in series for v in s.values if v is not None]
    top = _nice(max(values, default=0.0))
    plot_h = _H - _BOTTOM - _TOP
    n = max(len(labels), 1)
    step = (_W - _LEFT) / n
    body = _axes(labels, top, fmt)
    for k, s in enumerate(series):
        cls = f"s{min(k, PALETTE - 1)}"
        run: list[str] = []
        segments: list[list[str]] = [run]
        for i, v in enumerate(s.values):
            if v is None:
                run = []
                segments.append(run)
                continue
            x = _LEFT + step * (i + 0.5)
            y = _TOP + plot_h - v / top * plot_h
            run.append(f"{x:.2f},{y:.2f}")
            tip = f"{labels[i]} · {s.name}: {fmt(v)}"
            body.append(
                f'<circle class="{cls}" cx="{x:.2f}" cy="{y:.2f}" r="2.5">'
                f"<title>{escape(tip)}</title></circle>"
            )
        for seg in segments:
            if len(seg) > 1:
                body.append(f'<polyline class="line {cls}" points="{" ".join(seg)}"/>')
    desc = f"{len(series)} lines over {len(labels)} points; highest {fmt(max(values, default=0))}"
    return _frame(title, desc, body)


def top_series(
    rows: Sequence[tuple[int, str, float]], buckets: Sequence[int], keep: int = PALETTE - 1
) -> list[Series]:
    """(bucket, series, value) rows as one Series per name over `buckets`: the `keep` largest
    by total, the rest summed as "other" (so a chart of 40 workflows stays readable)."""
    totals: dict[str, float] = {}
    for _, name, v in rows:
        totals[name] = totals.get(name, 0.0) + v
    kept = sorted(totals, key=lambda n: (-totals[n], n))[:keep]
    index = {b: i for i, b in enumerate(buckets)}
    out = {name: [0.0] * len(buckets) for name in kept}
    other = [0.0] * len(buckets)
    for b, name, v in rows:
        i = index.get(b)
        if i is None:
            continue
        out.get(name, other)[i] += v
    series = [Series(name, out[name]) for name in kept]
    if any(other):
        series.append(Series("other", other))
    return series
