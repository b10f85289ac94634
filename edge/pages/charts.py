"""Small inline-SVG charts for the dashboard: lines over time, and intervals around a value.

No JavaScript and no front-end build: each function returns an ``<svg>`` element (markup safe to
put in a jinja2 page; every label is escaped) that scales to its container's width.

Examples:
    >>> svg = lines({"a": [(0.0, 0.1), (1.0, 0.2)]}, "rate")
    >>> svg.startswith("<figure><svg") and "polyline" in svg
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from markupsafe import Markup

__all__ = [
    "COLORS",
    "axis_top",
    "funnel",
    "holdout_lift",
    "intervals",
    "lines",
    "palette",
    "regret_svg",
]

COLORS = ["#1b6ac9", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#a6761d", "#666"]
_W, _H, _L, _B = 640, 240, 56, 28  # width, height, left and bottom margins
_STEPS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)  # round tops, per decade


def palette(keys: Sequence[str]) -> dict[str, str]:
    """A colour per key by its place in ``keys`` (a placement's variants in their order): every
    chart of a page takes its colours from one palette, so a variant looks the same in each.

    Examples:
        >>> palette(["plain", "bold"])
        {'plain': '#1b6ac9', 'bold': '#d95f02'}
    """
    return {key: COLORS[i % len(COLORS)] for i, key in enumerate(keys)}


def axis_top(highest: float, rate: bool = False) -> float:
    """The top of a y axis: the first round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 per
    decade) at or above ``highest``. A rate's axis never ends above 100%.

    Examples:
        >>> axis_top(0.5625, rate=True), axis_top(1.0, rate=True), axis_top(0.043, rate=True)
        (0.6, 1.0, 0.05)
        >>> axis_top(0.0, rate=True), axis_top(730.0)
        (1.0, 800.0)
    """
    if highest <= 0:
        return 1.0
    decade = 10.0 ** math.floor(math.log10(highest))
    top = next(s * decade for s in _STEPS if s * decade >= highest * (1 - 1e-9))
    top = float(f"{top:.6g}")  # 0.6, not 0.6000000000000001
    return min(top, 1.0) if rate and highest <= 1.0 else top


def lines(
    series: dict[str, Sequence[tuple[float, float]]],
    label: str,
    percent: bool = False,
    x_labels: tuple[str, str] = ("", ""),
    colors: Mapping[str, str] | None = None,
    marks: Sequence[tuple[float, str]] = (),
) -> Markup:
    """One line per series of (x, y) points (x: any increasing number, e.g. a timestamp).
    ``percent``: the values are rates (0 to 1), and the axis ends at 100% at most; ``colors``:
    the page's ``palette`` (by default, one of the series in their order); ``marks``: moments
    (x, what happened) drawn as dashed vertical lines, e.g. a change a policy detected."""
    if not any(series.values()):
        return Markup('<p class="muted">No data yet.</p>')
    colors = colors or palette(list(series))
    return _svg(
        _plot(series, label, percent, x_labels, colors, marks), _legend(list(series), colors)
    )


def regret_svg(series: dict[str, Sequence[tuple[float, float]]], title: str, x_label: str) -> str:
    """A standalone SVG document of ``series`` (cumulative regret per policy over decisions),
    its title and legend inside it: what the docs show, and the dashboard inlines.

    Examples:
        >>> svg = regret_svg({"Thompson": [(1.0, 0.0), (100.0, 3.5)]}, "stationary", "100")
        >>> svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and "Thompson" in svg
        True
    """
    colors = palette(list(series))
    rows = (len(series) + 2) // 3
    legend = "".join(
        f'<rect x="{_L + (i % 3) * 190}" y="{_H + 26 + (i // 3) * 16}" width="10" height="10" '
        f'fill="{colors[name]}"/><text x="{_L + (i % 3) * 190 + 14}" '
        f'y="{_H + 35 + (i // 3) * 16}">{escape(name)}</text>'
        for i, name in enumerate(series)
    )
    height = _H + 32 + 16 * rows
    body = "".join(_plot(series, "regret", False, ("0", x_label), colors))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 -22 {_W} {height + 22}" '
            f'width="{_W}" font-family="sans-serif" font-size="11" fill="#1d2433">'
            f'<text x="{_L}" y="-6" font-weight="bold">{escape(title)}</text>'
            f"{body}{legend}</svg>\n")  # fmt: skip


def _plot(
    series: dict[str, Sequence[tuple[float, float]]],
    label: str,
    percent: bool,
    x_labels: tuple[str, str],
    colors: Mapping[str, str],
    marks: Sequence[tuple[float, str]] = (),
) -> list[str]:
    """The axes, the lines and the marks of a ``lines`` chart, as SVG elements."""
    points = [p for values in series.values() for p in values]
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    top = axis_top(max(p[1] for p in points), rate=percent)
    span = (x1 - x0) or 1.0

    def x(v: float) -> float:
        return _L + (_W - _L - 10) * (v - x0) / span

    def y(v: float) -> float:
        return 10 + (_H - _B - 10) * (1 - v / top)

    shown = (lambda v: f"{v:.1%}") if percent else (lambda v: f"{v:,.3g}")
    parts = [
        _frame(label),
        f'<text x="{_L - 6}" y="16" text-anchor="end" class="top">'
        f"{f'{top * 100:g}%' if percent else f'{top:,g}'}</text>",
        f'<text x="{_L}" y="{_H - 8}">{escape(x_labels[0])}</text>',
        f'<text x="{_W - 10}" y="{_H - 8}" text-anchor="end">{escape(x_labels[1])}</text>',
    ]
    for at, what in marks:
        if x0 <= at <= x1:
            parts.append(f'<line x1="{x(at):.1f}" y1="10" x2="{x(at):.1f}" y2="{_H - _B}" '
                         f'stroke="#c0392b" stroke-dasharray="4 3" class="mark">'
                         f"<title>{escape(what)}</title></line>")  # fmt: skip
    for name, values in series.items():
        color = colors.get(name, COLORS[-1])
        coords = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in values)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}">'
                     f"<title>{escape(name)}</title></polyline>")  # fmt: skip
        if values:  # the latest value, marked (and a lone point visible at all)
            a, b = values[-1]
            parts.append(f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="3.5" fill="{color}">'
                         f"<title>{escape(name)}: {shown(b)}</title></circle>")  # fmt: skip
    return parts


def intervals(
    rows: Sequence[tuple[str, float, float, float]],
    label: str,
    colors: Mapping[str, str] | None = None,
) -> Markup:
    """One row per (name, low, value, high), on a shared axis with a line at 0; ``colors``:
    the page's ``palette`` (by default, one of the rows in their order)."""
    if not rows:
        return Markup('<p class="muted">No data yet.</p>')
    colors = colors or palette([r[0] for r in rows])
    low = min(min(r[1] for r in rows), 0.0)
    high = max(max(r[3] for r in rows), 0.0)
    span = (high - low) or 1.0
    height = 36 + 34 * len(rows)

    def x(v: float) -> float:
        return 120 + (_W - 140) * (v - low) / span

    parts = [f'<text x="120" y="14" class="axis">{escape(label)}</text>',
             f'<line x1="{x(0):.1f}" y1="20" x2="{x(0):.1f}" y2="{height - 4}" stroke="#999" '
             'stroke-dasharray="3 3"/>']  # fmt: skip
    for i, (name, lo, mid, hi) in enumerate(rows):
        cy = 44 + 34 * i
        color = colors.get(name, COLORS[-1])
        parts += [
            f'<text x="112" y="{cy + 4}" text-anchor="end">{escape(name)}</text>',
            f'<line x1="{x(lo):.1f}" y1="{cy}" x2="{x(hi):.1f}" y2="{cy}" stroke="{color}" '
            'stroke-width="3"/>',
            f'<circle cx="{x(mid):.1f}" cy="{cy}" r="5" fill="{color}">'
            f"<title>{escape(name)}: {mid:+.1%} [{lo:+.1%}, {hi:+.1%}]</title></circle>",
            f'<text x="{x(mid):.1f}" y="{cy - 8}" text-anchor="middle">{mid:+.1%}</text>',
        ]
    return Markup(f'<svg viewBox="0 0 {_W} {height}" class="chart" role="img">'
                  + "".join(parts) + "</svg>")  # fmt: skip


def holdout_lift(groups: Sequence[Mapping[str, Any]], label: str) -> Markup:
    """The difference in conversion rate of each group against the holdout, with its interval
    (``groups``: ``journeys.lift.compare``'s, a journey's or a broadcast's)."""
    return intervals(
        [(g["group"], c["differenceCI"][0], c["difference"], c["differenceCI"][1])
         for g in groups if g["vsHoldout"] for c in [g["vsHoldout"]["conversion"]]],
        label, palette([g["group"] for g in groups]),
    )  # fmt: skip


def funnel(stages: Sequence[tuple[str, int]], label: str) -> Markup:
    """Horizontal bars, one per stage, each with its count and its share of the first."""
    if not stages or not stages[0][1]:
        return Markup('<p class="muted">No one has entered yet.</p>')
    first, row = stages[0][1], 30
    left = min(260, 24 + 7 * max(len(name) for name, _ in stages))  # room for the longest name
    height = row * len(stages) + 10
    parts = [f'<text x="4" y="12" class="muted">{escape(label)}</text>']
    for i, (name, count) in enumerate(stages):
        y = 18 + i * row
        width = max(1.0, (_W - left - 120) * count / first)
        color = COLORS[0] if i == 0 else COLORS[1 + (i - 1) % (len(COLORS) - 1)]
        parts.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{escape(name)}</text>'
            f'<rect x="{left}" y="{y}" width="{width:.1f}" height="{row - 8}" fill="{color}">'
            f"<title>{escape(name)}: {count:,}</title></rect>"
            f'<text x="{left + width + 6:.1f}" y="{y + 15}">{count:,} ({count / first:.0%})</text>'
        )
    return Markup(
        f'<svg viewBox="0 0 {_W} {height + 8}" width="100%" role="img" '
        f'aria-label="{escape(label)}">{"".join(parts)}</svg>'
    )


def _frame(label: str) -> str:
    return (f'<line x1="{_L}" y1="{_H - _B}" x2="{_W - 10}" y2="{_H - _B}" stroke="#999"/>'
            f'<line x1="{_L}" y1="10" x2="{_L}" y2="{_H - _B}" stroke="#999"/>'
            f'<text x="{_L - 6}" y="{_H - _B}" text-anchor="end">0</text>'
            f'<text x="{_L + 4}" y="22" class="axis">{escape(label)}</text>')  # fmt: skip


def _legend(names: list[str], colors: Mapping[str, str]) -> str:
    return "".join(
        f'<span class="key"><i style="background:{colors.get(name, COLORS[-1])}"></i>'
        f"{escape(name)}</span>"
        for name in names
    )


def _svg(parts: list[str], legend: str) -> Markup:
    svg = f'<svg viewBox="0 0 {_W} {_H}" class="chart" role="img">' + "".join(parts) + "</svg>"
    return Markup(f"<figure>{svg}<figcaption>{legend}</figcaption></figure>")
