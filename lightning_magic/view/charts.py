"""A run's metrics as inline SVG: one small chart per metric, each on its own scale, over the
global step, with the epochs (Lightning's ``current_epoch``) marked where they start.

Each chart is its own ``<svg>`` of a fixed size in a wrapping row, so a narrow notebook (a
sidebar open) puts fewer charts side by side instead of shrinking their text. Every label
is laid out inside its chart: tick labels get the room their text needs, epoch names sit below
the plot, never on its lines. At most ``MAX_POINTS`` points per series are drawn however long
the run was. Every name and value that reaches the markup is escaped.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any, Iterable, Optional, Sequence

from .ticks import axis, nice_ticks, short_number, tick_labels

MAX_POINTS = 300      # per series, in the SVG
MAX_PANELS = 24       # metrics charted; the rest are named below the charts
NOT_METRICS = ("stage", "epoch", "step")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")
FONT = "var(--jp-ui-font-family, system-ui, sans-serif)"
MUTED = "var(--jp-ui-font-color2, #616161)"
BORDER = "var(--jp-border-color2, rgba(127, 127, 127, 0.35))"
GRID = "rgba(127, 127, 127, 0.18)"
WIDTH, HEIGHT = 250, 150
LABEL_PX = 10                 # tick and epoch labels: the smallest text in a chart
CHAR_W = 0.62 * LABEL_PX      # a generous width per character, so text never overflows
TITLE_PX = 11
TITLE_CHAR_W = 0.66 * TITLE_PX

Point = tuple[float, float]


def finite(value: Any) -> Optional[float]:
    """``value`` as a float when it is a finite number (bools are not metrics), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def chart_order(names: Iterable[str]) -> list[str]:
    """Losses first, then the other metrics in the order they were first logged."""
    names = list(dict.fromkeys(names))
    return [n for n in names if "loss" in n.lower()] + [n for n in names if "loss" not in n.lower()]


def series_from_history(history: Sequence[dict]) -> dict[str, list[Point]]:
    """``{metric: [(step, value), ...]}`` from history rows ``{"stage", "epoch", "step", ...}``."""
    series: dict[str, list[Point]] = {}
    for row in history:
        step = finite(row.get("step"))
        if step is None:
            continue
        for name, value in row.items():
            value = finite(value)
            if name not in NOT_METRICS and value is not None:
                series.setdefault(str(name), []).append((step, value))
    return {name: series[name] for name in chart_order(series)}


def epoch_starts(history: Sequence[dict]) -> list[tuple[int, float]]:
    """``[(epoch, first step seen in it), ...]`` in the order the epochs began."""
    starts: dict[int, float] = {}
    for row in history:
        epoch, step = row.get("epoch"), finite(row.get("step"))
        if isinstance(epoch, int) and step is not None and epoch not in starts:
            starts[epoch] = step
    return sorted(starts.items(), key=lambda item: item[1])


def downsample(points: Sequence[Point], limit: int = MAX_POINTS) -> list[Point]:
    """At most ``limit`` points: consecutive points averaged in equal buckets; the last kept."""
    if len(points) <= limit:
        return list(points)
    out, edges = [], [i * (len(points) - 1) // (limit - 1) for i in range(limit)]
    for lo, hi in zip(edges, edges[1:]):
        out.append(mean(points[lo:hi]))
    out.append(points[-1])
    return out


def mean(points: Sequence[Point]) -> Point:
    return (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))


def render_chart_svg(history: Sequence[dict], *, max_points: int = MAX_POINTS) -> str:
    """The charts of every scalar in ``history`` (see ``series_from_history``); "" when none."""
    return render_series_svg(series_from_history(history), epoch_starts(history),
                             max_points=max_points)


def render_series_svg(series: dict[str, Sequence[Point]], epochs: Sequence[tuple[int, float]] = (),
                      *, max_points: int = MAX_POINTS) -> str:
    """A wrapping row of charts, one per series in the given order; "" when there is nothing.
    ``epochs`` are ``(epoch, its first step)``."""
    names = [name for name, points in series.items() if points]
    if not names:
        return ""
    shown, hidden = names[:MAX_PANELS], names[MAX_PANELS:]
    panels = [_panel(name, downsample(series[name], max_points), epochs, PALETTE[i % len(PALETTE)])
              for i, name in enumerate(shown)]
    more = (f"<div style='color:{MUTED}'>Not charted: {escape(', '.join(hidden))}</div>"
            if hidden else "")
    return ("<div class='lightning-magic-charts' style='display:flex;flex-wrap:wrap;gap:4px 12px;"
            f"margin-top:4px'>{''.join(panels)}</div>{more}")


def _width(text: str, char_w: float = CHAR_W) -> float:
    return len(text) * char_w


def _panel(name: str, points: list[Point], epochs: Sequence[tuple[int, float]],
           colour: str) -> str:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    lo_x, hi_x = min(xs), max(xs)
    if hi_x == lo_x:
        lo_x, hi_x = lo_x - 1, hi_x + 1
    lo_y, hi_y, y_ticks = axis(min(ys), max(ys), 4)
    y_labels = tick_labels(y_ticks)
    x0 = max(_width(label) for label in y_labels) + 8
    x1, y0, y1 = WIDTH - 10.0, 22.0, HEIGHT - 34.0

    def sx(x: float) -> float:
        return x0 + (min(max(x, lo_x), hi_x) - lo_x) / (hi_x - lo_x) * (x1 - x0)

    def sy(y: float) -> float:
        return y1 - (y - lo_y) / (hi_y - lo_y) * (y1 - y0)

    value = short_number(ys[-1])
    room = WIDTH - 4 - _width(value, TITLE_CHAR_W) - 10
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' class='lightning-magic-chart' "
             f"width='{WIDTH}' height='{HEIGHT}' viewBox='0 0 {WIDTH} {HEIGHT}' "
             f"style='max-width:100%;height:auto;font-family:{FONT};font-size:{LABEL_PX}px;"
             f"overflow:hidden' role='img' aria-label='{escape(f'{name} over steps, last {value}')}'>"
             f"<title>{escape(name)}</title>",
             _text(2, 14, _clip(name, int(room / TITLE_CHAR_W)), "start", "currentColor",
                   TITLE_PX, bold=True),
             _text(WIDTH - 2, 14, value, "end", "currentColor", TITLE_PX)]
    for tick, label in zip(y_ticks, y_labels):
        y = sy(tick)
        parts.append(f"<line x1='{x0:.1f}' y1='{y:.1f}' x2='{x1:.1f}' y2='{y:.1f}' "
                     f"style='stroke:{GRID}'/>")
        parts.append(_text(x0 - 4, y + LABEL_PX * 0.35, label, "end"))
    parts.append(f"<rect x='{x0:.1f}' y='{y0:.1f}' width='{x1 - x0:.1f}' height='{y1 - y0:.1f}' "
                 f"style='fill:none;stroke:{BORDER}'/>")
    parts += _epoch_marks(epochs, lo_x, hi_x, sx, x0, x1, y0, y1)
    parts += _step_ticks(lo_x, hi_x, sx, y1 + 28)
    coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    if len(points) > 1:
        parts.append(f"<polyline points='{coords}' fill='none' stroke='{colour}' "
                     "stroke-width='1.5' stroke-linejoin='round'/>")
    if len(points) <= 40:
        parts += [f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='2' fill='{colour}'/>"
                  for x, y in points]
    return "".join(parts) + "</svg>"


def _epoch_marks(epochs: Sequence[tuple[int, float]], lo_x: float, hi_x: float, sx: Any,
                 x0: float, x1: float, y0: float, y1: float) -> list[str]:
    """Dashed lines where epochs start, named below the plot where the names have room."""
    marks = [(e, s) for e, s in epochs if lo_x <= s <= hi_x] \
        or [(e, s) for e, s in epochs if s < lo_x][-1:]  # the epoch the series began in
    if not marks:
        return []
    label_w = _width(f"epoch {marks[-1][0]}") + 6
    every = max(1, math.ceil(len(marks) * label_w / max(1.0, x1 - x0)))
    parts, free_from = [], 0.0
    for index, (epoch, start) in enumerate(marks):
        if index % every:
            continue
        x = sx(start)
        if x > x0 + 0.5:
            parts.append(f"<line x1='{x:.1f}' y1='{y0:.1f}' x2='{x:.1f}' y2='{y1 + 3:.1f}' "
                         f"stroke-dasharray='3 3' style='stroke:{BORDER}'/>")
        text = f"epoch {epoch}" if index == 0 or every > 1 or len(marks) < 6 else str(epoch)
        left = max(x0, x + 2)
        if left < free_from:
            continue
        if left + _width(text) > WIDTH - 2:  # no room right of its line: end the name there
            left = x - 2 - _width(text)
            if left < free_from:
                continue
        parts.append(_text(left, y1 + 13, text, "start"))
        free_from = left + _width(text) + 6
    return parts


def _step_ticks(lo_x: float, hi_x: float, sx: Any, y: float) -> list[str]:
    ticks = [t for t in nice_ticks(lo_x, hi_x, 4, least=1.0) if lo_x <= t <= hi_x]
    labels = tick_labels(ticks)
    parts, free_from = [], 0.0
    for index, (tick, label) in enumerate(zip(ticks, labels)):
        text = f"step {label}" if index == 0 else label
        width = _width(text)
        centre = min(max(sx(tick), width / 2 + 2), WIDTH - width / 2 - 2)
        if centre - width / 2 >= free_from:
            parts.append(_text(centre, y, text, "middle"))
            free_from = centre + width / 2 + 6
    return parts


def _text(x: float, y: float, text: str, anchor: str, fill: str = MUTED, size: int = LABEL_PX,
          bold: bool = False) -> str:
    weight = ";font-weight:bold" if bold else ""
    # colours as styles: var() is a CSS value, not one an SVG presentation attribute takes
    return (f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' "
            f"style='fill:{fill};font-size:{size}px{weight}'>{escape(text)}</text>")


def _clip(text: str, width: int) -> str:
    width = max(4, width)
    return text if len(text) <= width else text[:width - 1] + "…"
