"""Inline SVG charts drawn on the server for the staff console: columns per day (with optional lines) and
horizontal bars per partner. No JavaScript and nothing fetched from the network; every mark has a <title>."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

Number = int | float | Decimal

# The viewBox of a column chart; the SVG scales to its container's width (console.css), text with it.
WIDTH, HEIGHT = 640, 230
LEFT, RIGHT, TOP, BOTTOM = 56, 14, 30, 28
MAX_X_LABELS = 8


@dataclass(frozen=True)
class Series:
    """One named series of a chart; `css_class` picks its colour in console.css (series-1 … series-4)."""

    name: str
    values: Sequence[Number]
    kind: str = "bar"  # "bar" or "line"
    css_class: str = "series-1"
    decimals: int = 0


# Fallback colours when console.css is not loaded (a class rule in the stylesheet wins over these).
FALLBACK_FILL = {"series-1": "#417690", "series-2": "#e07b39", "series-3": "#5b9a68", "series-4": "#a05195"}


def number_text(value: Number, decimals: int = 0) -> str:
    """A value for a tooltip or table: thousands separated, a fixed number of decimals."""
    return f"{float(value):,.{decimals}f}" if decimals else f"{round(float(value)):,}"


def tick_text(value: float, step: float) -> str:
    """An axis tick, short: 1.2M, 15k, 2.5, 0."""
    magnitude = abs(value)
    if magnitude >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if magnitude >= 10_000:
        return f"{value / 1_000:g}k"
    if step >= 1:
        return f"{value:,.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def axis_ticks(values: Sequence[Number], ticks: int = 4) -> list[float]:
    """Round tick values covering the data and zero (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    numbers = [float(v) for v in values]
    low, high = min([0.0, *numbers]), max([0.0, *numbers])
    if high - low <= 0:
        high = 1.0
    raw = (high - low) / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude * (1 + 1e-9))
    if step < 1 and all(float(v).is_integer() for v in numbers):
        step = 1.0  # counts: no 0.5-session ticks
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 10) for i in range(first, last + 1)]


def _f(x: float) -> str:
    return f"{x:.1f}"


def _svg_open(chart_id: str, title: str, description: str, width: int, height: int) -> SafeString:
    return format_html(
        '<svg class="console-chart" id="{id}" viewBox="0 0 {w} {h}" role="img"'
        ' aria-labelledby="{id}-title {id}-desc" preserveAspectRatio="xMinYMin meet">'
        '<title id="{id}-title">{title}</title><desc id="{id}-desc">{desc}</desc>',
        id=chart_id,
        w=width,
        h=height,
        title=title,
        desc=description,
    )


def _legend(series: Sequence[Series], right: float) -> list[SafeString]:
    """Swatches and names at the top right, laid out from the right edge (names are short)."""
    parts: list[SafeString] = []
    x = right
    for s in reversed(series):
        x -= 7 * len(s.name) + 26
        swatch = (
            format_html(
                '<rect class="{c}" fill="{f}" x="{x}" y="6" width="12" height="10"/>',
                c=s.css_class,
                f=FALLBACK_FILL.get(s.css_class, "#417690"),
                x=_f(x),
            )
            if s.kind == "bar"
            else format_html(
                '<line class="line {c}" stroke="{f}" stroke-width="2.5" x1="{x}" x2="{x2}" y1="11" y2="11"/>',
                c=s.css_class,
                f=FALLBACK_FILL.get(s.css_class, "#417690"),
                x=_f(x),
                x2=_f(x + 12),
            )
        )
        parts.append(swatch)
        parts.append(format_html('<text class="legend" x="{x}" y="15">{name}</text>', x=_f(x + 16), name=s.name))
    return parts


def column_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    labels: Sequence[str],
    tooltips: Sequence[str] | None = None,
    series: Sequence[Series],
    unit: str = "",
) -> SafeString:
    """Columns per category (days) for "bar" series, grouped side by side, and polylines for "line" series,
    on one y axis from zero. `labels` go under the axis (thinned out); `tooltips` name each slot in full."""
    tooltips = tooltips or labels
    count = len(labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    ticks = axis_ticks([v for s in series for v in s.values])
    low, high = ticks[0], ticks[-1]

    def y(value: Number) -> float:
        return TOP + plot_h * (high - float(value)) / (high - low)

    slot = plot_w / max(count, 1)
    parts = [_svg_open(chart_id, title, description, WIDTH, HEIGHT)]
    if unit:
        parts.append(format_html('<text class="unit" x="4" y="15">{}</text>', unit))
    parts += _legend(series, WIDTH - RIGHT) if len(series) > 1 else []
    for tick in ticks:
        parts.append(
            format_html(
                '<line class="grid{zero}" x1="{x1}" x2="{x2}" y1="{y}" y2="{y}" stroke="#ccc" stroke-width="1"/>'
                '<text class="tick" x="{tx}" y="{ty}" text-anchor="end">{text}</text>',
                zero=" zero" if tick == 0 else "",
                x1=LEFT,
                x2=WIDTH - RIGHT,
                y=_f(y(tick)),
                tx=LEFT - 6,
                ty=_f(y(tick) + 4),
                text=tick_text(tick, ticks[1] - ticks[0]),
            )
        )
    every = max(1, math.ceil(count / MAX_X_LABELS))
    for i, label in enumerate(labels):
        if (count - 1 - i) % every == 0:  # the newest slot always carries its label
            parts.append(
                format_html(
                    '<text class="tick" x="{x}" y="{y}" text-anchor="middle">{label}</text>',
                    x=_f(LEFT + slot * (i + 0.5)),
                    y=HEIGHT - BOTTOM + 16,
                    label=label,
                )
            )
    bars = [s for s in series if s.kind == "bar"]
    group_w = slot * 0.76
    bar_w = group_w / max(len(bars), 1)
    for b, s in enumerate(bars):
        fill = FALLBACK_FILL.get(s.css_class, "#417690")
        for i, value in enumerate(s.values):
            top, bottom = y(max(float(value), 0.0)), y(min(float(value), 0.0))
            parts.append(
                format_html(
                    '<rect class="bar {c}" fill="{fill}" x="{x}" y="{y}" width="{w}" height="{h}">'
                    "<title>{tip}: {value} {name}</title></rect>",
                    c=s.css_class,
                    fill=fill,
                    x=_f(LEFT + slot * i + (slot - group_w) / 2 + b * bar_w),
                    y=_f(top),
                    w=_f(max(bar_w - 1, 1)),
                    h=_f(max(bottom - top, 0.0)),
                    tip=tooltips[i],
                    value=number_text(value, s.decimals),
                    name=s.name,
                )
            )
    for s in series:
        if s.kind != "line":
            continue
        stroke = FALLBACK_FILL.get(s.css_class, "#417690")
        points = [(LEFT + slot * (i + 0.5), y(v)) for i, v in enumerate(s.values)]
        parts.append(
            format_html(
                '<polyline class="line {c}" fill="none" stroke="{stroke}" stroke-width="2" points="{points}"/>',
                c=s.css_class,
                stroke=stroke,
                points=" ".join(f"{_f(px)},{_f(py)}" for px, py in points),
            )
        )
        for i, (px, py) in enumerate(points):
            parts.append(
                format_html(
                    '<circle class="point {c}" fill="{stroke}" cx="{x}" cy="{y}" r="3">'
                    "<title>{tip}: {value} {name}</title></circle>",
                    c=s.css_class,
                    stroke=stroke,
                    x=_f(px),
                    y=_f(py),
                    tip=tooltips[i],
                    value=number_text(s.values[i], s.decimals),
                    name=s.name,
                )
            )
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(parts))  # noqa: S308 - every part was built with format_html


@dataclass(frozen=True)
class Bar:
    """One row of a horizontal bar chart."""

    label: str
    value: Number
    tooltip: str
    value_text: str = ""


BAR_ROW, LABEL_W, VALUE_W = 24, 170, 70


def bar_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    bars: Sequence[Bar],
    maximum: Number | None = None,
    css_class: str = "series-1",
) -> SafeString:
    """Horizontal bars, one per row (a partner), from zero to `maximum` (the largest value when unset),
    with the value written after each bar and the row's tooltip as its <title>."""
    height = TOP - 14 + BAR_ROW * max(len(bars), 1) + 24
    top = TOP - 14
    plot_w = WIDTH - LABEL_W - VALUE_W - RIGHT
    ticks = axis_ticks([*(b.value for b in bars), *([maximum] if maximum is not None else [])])
    high = float(maximum) if maximum is not None else ticks[-1]
    high = high or 1.0
    fill = FALLBACK_FILL.get(css_class, "#417690")
    parts = [_svg_open(chart_id, title, description, WIDTH, height)]
    for tick in ticks:
        if tick > high + 1e-9:
            continue
        x = LABEL_W + plot_w * tick / high
        parts.append(
            format_html(
                '<line class="grid{zero}" x1="{x}" x2="{x}" y1="{y1}" y2="{y2}" stroke="#ccc" stroke-width="1"/>'
                '<text class="tick" x="{x}" y="{ty}" text-anchor="middle">{text}</text>',
                zero=" zero" if tick == 0 else "",
                x=_f(x),
                y1=top,
                y2=height - 20,
                ty=height - 6,
                text=tick_text(tick, ticks[1] - ticks[0]),
            )
        )
    for i, bar in enumerate(bars):
        row_y = top + BAR_ROW * i
        label = bar.label if len(bar.label) <= 26 else bar.label[:25] + "…"
        width = plot_w * max(float(bar.value), 0.0) / high
        parts.append(
            format_html(
                '<text class="label" x="{lx}" y="{ty}" text-anchor="end">{label}</text>'
                '<rect class="bar {c}" fill="{fill}" x="{x}" y="{y}" width="{w}" height="{h}">'
                "<title>{tip}</title></rect>"
                '<text class="value" x="{vx}" y="{ty}">{value}</text>',
                lx=LABEL_W - 8,
                ty=_f(row_y + BAR_ROW / 2 + 4),
                label=label,
                c=css_class,
                fill=fill,
                x=LABEL_W,
                y=_f(row_y + 4),
                w=_f(width),
                h=BAR_ROW - 8,
                tip=bar.tooltip,
                vx=_f(LABEL_W + width + 6),
                value=bar.value_text or number_text(bar.value),
            )
        )
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(parts))  # noqa: S308 - every part was built with format_html
