"""Bar charts as inline SVG, rendered on the server: no JavaScript library, no CDN, nothing to build.

Pure: no Airflow import. One chart type covers the three charts of the "Routing & cost" page: bars
(stacked when there are several series) over categories (days, or duration buckets), with an
optional line drawn over them (what the same work would have cost synchronously). Colours come from
CSS classes (``fill-<name>``) so the page's stylesheet themes them, dark mode included; every bar and
point carries a ``<title>``, the browser's own tooltip. All text is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Series", "bar_chart", "compact_count", "compact_usd", "nice_ticks"]

_MARGIN_LEFT = 58
_MARGIN_RIGHT = 12
_MARGIN_TOP = 28
_MARGIN_BOTTOM = 44
_LEGEND_ROW = 16
_CHAR_WIDTH = 6.2
"""About the width of one character of the charts' 11 px labels: enough to lay labels out without overlap."""


@dataclass(frozen=True)
class Series:
    """One named row of values, one per category.

    :param name: shown in the legend and tooltips.
    :param values: one value per category (``None`` for no value).
    :param css_class: the class that colours it, e.g. ``fill-0`` or ``fill-succeeded``.
    """

    name: str
    values: Sequence[float | None]
    css_class: str


def nice_ticks(maximum: float, count: int = 4) -> list[float]:
    """Round axis ticks from 0 to at least ``maximum``: steps of 1, 2, 2.5 or 5 times a power of ten."""
    if not math.isfinite(maximum) or maximum <= 0:
        return [0.0, 1.0]
    raw = maximum / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    steps = math.ceil(maximum / step - 1e-9)
    return [round(i * step, 12) for i in range(steps + 1)]


def compact_usd(value: float) -> str:
    """Dollars short enough for an axis: ``$0``, ``$0.0044``, ``$0.35``, ``$12``, ``$1.2k``."""
    if value == 0:
        return "$0"
    if abs(value) >= 1000:
        return f"${value / 1000:.1f}k".replace(".0k", "k")
    if abs(value) >= 10:
        return f"${value:.0f}"
    if abs(value) >= 0.1:
        return f"${value:.2f}"
    return f"${value:.4f}".rstrip("0")


def compact_count(value: float) -> str:
    """Counts for an axis: ``0``, ``40``, ``1,250``, ``12k``, ``1.5M``."""
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M".replace(".0M", "M")
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _attr(text: str) -> str:
    return html.escape(text, quote=True)


def bar_chart(
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    value_format: Callable[[float], str],
    line: Series | None = None,
    width: int = 640,
    height: int = 240,
    label_every: int = 1,
    empty_text: str = "Nothing landed in this period.",
) -> str:
    """An SVG bar chart: one bar per category, the series stacked in order, and an optional line over it.

    :param categories: the x-axis labels (dates, buckets).
    :param series: the stacked values; each has one value per category.
    :param title: drawn at the top and used as the image's accessible name.
    :param value_format: formats axis ticks and tooltips (dollars, counts).
    :param line: a series drawn as a dashed line with points over the bars.
    :param width: the SVG's coordinate width (it scales to its container).
    :param height: the plot's coordinate height, legend excluded.
    :param label_every: label one category in this many (long date ranges).
    :param empty_text: shown instead of bars when every value is zero.
    """
    for item in (*series, *([line] if line else [])):
        if len(item.values) != len(categories):
            raise ValueError(f"series {item.name!r} has {len(item.values)} values for {len(categories)} categories")
    totals = [sum(v or 0.0 for v in column) for column in zip(*(s.values for s in series), strict=True)] or [0.0] * len(
        categories
    )
    peak = max([*totals, *((v or 0.0) for v in (line.values if line else []))], default=0.0)
    legend = _legend_layout([*series, *([line] if line else [])], width)
    legend_rows = 1 + max((row for _, _, row in legend), default=-1)
    full_height = height + legend_rows * _LEGEND_ROW + 6
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {full_height}" '
        f'role="img" aria-label="{_attr(title)}">',
        f'<text class="title" x="0" y="14">{html.escape(title)}</text>',
    ]
    plot_w = width - _MARGIN_LEFT - _MARGIN_RIGHT
    plot_h = height - _MARGIN_TOP - _MARGIN_BOTTOM
    ticks = nice_ticks(peak)
    top = ticks[-1]

    def y_of(value: float) -> float:
        return _MARGIN_TOP + plot_h - (value / top) * plot_h

    for tick in ticks:
        y = y_of(tick)
        css = "axis" if tick == 0 else "grid"
        right = width - _MARGIN_RIGHT
        parts.append(f'<line class="{css}" x1="{_MARGIN_LEFT}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text x="{_MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{html.escape(value_format(tick))}</text>'
        )
    slot = plot_w / max(len(categories), 1)
    bar_w = max(slot * 0.72, 1.0)
    # Labels wider than their slot go on two staggered lines rather than over each other.
    widest = max((len(c) * _CHAR_WIDTH for c in categories), default=0.0)
    stagger = widest > slot * max(label_every, 1) * 0.95
    for index, category in enumerate(categories):
        x = _MARGIN_LEFT + index * slot + (slot - bar_w) / 2
        if index % max(label_every, 1) == 0 or index == len(categories) - 1:
            center = x + bar_w / 2
            y = _MARGIN_TOP + plot_h + 16 + (12 if stagger and index % 2 else 0)
            parts.append(f'<text x="{center:.1f}" y="{y}" text-anchor="middle">{html.escape(category)}</text>')
        base = 0.0
        for item in series:
            value = item.values[index] or 0.0
            if value <= 0:
                continue
            y_top, y_base = y_of(base + value), y_of(base)
            tip = f"{category} \u00b7 {item.name}: {value_format(value)}"
            parts.append(
                f'<rect class="{_attr(item.css_class)}" x="{x:.1f}" y="{y_top:.1f}" width="{bar_w:.1f}" '
                f'height="{max(y_base - y_top, 0.5):.1f}" data-series="{_attr(item.name)}" '
                f'data-category="{_attr(category)}" data-value="{value:g}"><title>{html.escape(tip)}</title></rect>'
            )
            base += value
    if line is not None:
        points = [
            (_MARGIN_LEFT + index * slot + slot / 2, y_of(value), categories[index], value)
            for index, value in enumerate(line.values)
            if value is not None
        ]
        if points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
            parts.append(f'<polyline class="line" points="{path}"/>')
            for x, y, category, value in points:
                if value > 0:
                    tip = f"{category} \u00b7 {line.name}: {value_format(value)}"
                    parts.append(
                        f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="2.5" data-series="{_attr(line.name)}" '
                        f'data-value="{value:g}"><title>{html.escape(tip)}</title></circle>'
                    )
    if peak <= 0:
        parts.append(
            f'<text class="empty" x="{_MARGIN_LEFT + plot_w / 2:.1f}" y="{_MARGIN_TOP + plot_h / 2:.1f}" '
            f'text-anchor="middle">{html.escape(empty_text)}</text>'
        )
    for item, x, row in legend:
        y = height + row * _LEGEND_ROW
        if item is line:
            parts.append(f'<line class="line" x1="{x:.1f}" x2="{x + 14:.1f}" y1="{y - 4}" y2="{y - 4}"/>')
        else:
            parts.append(f'<rect class="{_attr(item.css_class)}" x="{x:.1f}" y="{y - 9}" width="10" height="10"/>')
        parts.append(f'<text x="{x + 18:.1f}" y="{y}">{html.escape(item.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _legend_layout(items: Sequence[Series], width: int) -> list[tuple[Series, float, int]]:
    """Legend entries flowed left to right, wrapping to a new row: ``(item, x, row)``."""
    placed: list[tuple[Series, float, int]] = []
    x, row = float(_MARGIN_LEFT), 0
    for item in items:
        entry = 18 + len(item.name) * _CHAR_WIDTH + 16
        if x + entry > width and x > _MARGIN_LEFT:
            x, row = float(_MARGIN_LEFT), row + 1
        placed.append((item, x, row))
        x += entry
    return placed
