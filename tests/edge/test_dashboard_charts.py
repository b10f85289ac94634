"""The dashboard's SVG charts: a rate axis ends at 100% at most (or at a round number just above
small rates), and one palette gives a variant the same colour in every chart."""

from __future__ import annotations

import re

import pytest

from edge.pages.charts import COLORS, intervals, lines, palette

_TOP = re.compile(r'class="top">([^<]*)</text>')


def _top(svg: str) -> str:
    found = _TOP.findall(svg)
    assert len(found) == 1, svg
    return found[0]


def _percents(svg: str) -> list[float]:
    """Every percentage the chart writes (axis, titles of points)."""
    return [float(p) for p in re.findall(r"([-+]?\d+(?:\.\d+)?)%", svg)]


def _plotted_ys(svg: str) -> list[float]:
    ys = [float(y) for y in re.findall(r'cy="([\d.]+)"', svg)]
    for points in re.findall(r'points="([^"]*)"', svg):
        ys += [float(pair.split(",")[1]) for pair in points.split()]
    return ys


def test_a_rate_axis_ends_at_100_percent() -> None:
    svg = str(lines({"a": [(0.0, 0.4), (1.0, 1.0)], "b": [(0.0, 0.6), (1.0, 0.0)]}, "share",
                    percent=True))  # fmt: skip
    assert _top(svg) == "100%"
    assert max(_percents(svg)) == 100.0  # nothing above 100%: the top, and a's last point
    assert min(_plotted_ys(svg)) == pytest.approx(10.0)  # 100% sits on the top of the frame


@pytest.mark.parametrize(
    ("highest", "top"),
    [
        pytest.param(0.5625, "60%", id="56%-to-60%"),
        pytest.param(0.043, "5%", id="4.3%-to-5%"),
        pytest.param(0.012, "1.2%", id="1.2%-stays"),
        pytest.param(0.151, "20%", id="15.1%-to-20%"),
        pytest.param(0.85, "100%", id="85%-to-100%"),
        pytest.param(0.999, "100%", id="99.9%-to-100%"),
    ],
)
def test_small_rates_get_a_round_top_just_above(highest: float, top: str) -> None:
    svg = str(lines({"a": [(0.0, highest / 2), (1.0, highest)]}, "rate", percent=True))
    assert _top(svg) == top
    assert float(top.rstrip("%")) <= 100.0
    assert highest * 100 <= float(top.rstrip("%")) <= highest * 100 * 1.34
    assert min(_plotted_ys(svg)) >= 10.0  # the highest point inside the frame


def test_an_axis_of_counts_is_not_capped() -> None:
    svg = str(lines({"orders": [(0.0, 120.0), (1.0, 730.0)]}, "orders per day"))
    assert _top(svg) == "800"


def test_a_rate_chart_of_nothing_yet_still_has_an_axis() -> None:
    svg = str(lines({"a": [(0.0, 0.0), (1.0, 0.0)]}, "rate", percent=True))
    assert _top(svg) == "100%"


def _colours(svg: str, name: str) -> set[str]:
    """The colours ``name`` is drawn in: its line, its points, its legend key."""
    return (set(re.findall(r'stroke="(#\w+)"[^>]*><title>' + name + "</title>", svg))
            | set(re.findall(r'fill="(#\w+)"><title>' + name + ":", svg))
            | set(re.findall(r'background:(#\w+)"></i>' + name + "</span>", svg)))  # fmt: skip


def test_one_palette_colours_a_variant_alike_in_every_chart() -> None:
    colors = palette(["plain", "bold", "bolder"])
    assert len(set(colors.values())) == 3
    rate = str(lines({"plain": [(0.0, 0.1)], "bold": [(0.0, 0.2)], "bolder": [(0.0, 0.3)]},
                     "rate", percent=True, colors=colors))  # fmt: skip
    # The lift chart has no row for the control: without the palette, "bold" would take the
    # control's colour there.
    lift = str(intervals([("bold", -0.1, 0.2, 0.5), ("bolder", 0.0, 0.3, 0.6)], "lift", colors))
    for name in ("bold", "bolder"):
        assert _colours(rate, name) == _colours(lift, name) == {colors[name]}
    assert _colours(rate, "plain") == {COLORS[0]}
    assert palette(["a", "b"]) == {"a": COLORS[0], "b": COLORS[1]}  # by order, stable
