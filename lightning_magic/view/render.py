"""How a run looks: its metrics charted as inline SVG, its progress as HTML or one text line,
and its summary. Pure functions of what they are given; nothing here displays anything.

A chart is one ``<svg>`` with a small panel per metric (each on its own scale) over the global
step, dashed lines where epochs start, and at most ``MAX_POINTS`` points per series however
long the run was, so a notebook that keeps the chart does not grow with the run.
Every name and value that reaches the markup is escaped.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any, Iterable, Optional, Sequence

MAX_POINTS = 300      # per series, in the SVG
MAX_PANELS = 24       # metrics charted; the rest are named below the chart
MAX_EPOCH_MARKS = 10  # labelled epoch starts per panel
NOT_METRICS = ("stage", "epoch", "step")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")
FONT = "var(--jp-ui-font-family, system-ui, sans-serif)"
MUTED = "var(--jp-ui-font-color2, #757575)"
TRACK = "rgba(127, 127, 127, 0.22)"
FILL = "var(--jp-brand-color1, #1976d2)"
BOX = ("font-family:var(--jp-ui-font-family, system-ui, sans-serif);"
       "font-size:var(--jp-ui-font-size1, 13px);line-height:1.45")
TEXT_BAR = 20
_GIB = 1024**3
BORDER = "var(--jp-border-color2, rgba(127, 127, 127, 0.35))"

Point = tuple[float, float]


def finite(value: Any) -> Optional[float]:
    """``value`` as a float when it is a finite number (bools are not metrics), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def number(value: float) -> str:
    """A metric value as people read it: four significant digits."""
    return f"{value:.4g}"


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


def render_chart_svg(history: Sequence[dict], *, columns: int = 3, width: int = 240,
                     height: int = 130, max_points: int = MAX_POINTS) -> str:
    """The chart of every scalar in ``history`` (see ``series_from_history``); "" when none."""
    return render_series_svg(series_from_history(history), epoch_starts(history),
                             columns=columns, width=width, height=height, max_points=max_points)


def render_series_svg(series: dict[str, Sequence[Point]], epochs: Sequence[tuple[int, float]] = (),
                      *, columns: int = 3, width: int = 240, height: int = 130,
                      max_points: int = MAX_POINTS) -> str:
    """One SVG with a panel per series, in the given order; "" when there is nothing to draw."""
    names = [name for name, points in series.items() if points]
    if not names:
        return ""
    shown, hidden = names[:MAX_PANELS], names[MAX_PANELS:]
    columns = max(1, min(columns, len(shown)))
    rows = math.ceil(len(shown) / columns)
    total_w, total_h = columns * width, rows * height
    panels = [_panel(name, downsample(series[name], max_points), epochs, PALETTE[i % len(PALETTE)],
                     (i % columns) * width, (i // columns) * height, width, height)
              for i, name in enumerate(shown)]
    more = ""
    if hidden:
        more = (f"<div style='color:{MUTED}'>Not charted: {escape(', '.join(hidden))}</div>")
    return (f"<svg xmlns='http://www.w3.org/2000/svg' class='lightning-magic-chart' "
            f"width='{total_w}' height='{total_h}' viewBox='0 0 {total_w} {total_h}' "
            f"style='max-width:100%;height:auto;font-family:{FONT};font-size:10px' role='img' "
            f"aria-label='{escape('metrics over steps: ' + ', '.join(shown))}'>"
            + "".join(panels) + "</svg>" + more)


def _panel(name: str, points: list[Point], epochs: Sequence[tuple[int, float]], colour: str,
           left: float, top: float, width: float, height: float) -> str:
    pad_l, pad_r, pad_t, pad_b = 40.0, 8.0, 18.0, 16.0
    x0, x1 = left + pad_l, left + width - pad_r
    y0, y1 = top + pad_t, top + height - pad_b
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    lo_x, hi_x = min(xs), max(xs)
    marks = [(e, s) for e, s in epochs if lo_x <= s <= hi_x] \
        or [(e, s) for e, s in epochs if s < lo_x][-1:]  # the epoch the series began in
    lo_y, hi_y = min(ys), max(ys)
    if hi_y == lo_y:
        spread = abs(hi_y) * 0.1 or 1.0
        lo_y, hi_y = lo_y - spread, hi_y + spread
    if hi_x == lo_x:
        lo_x, hi_x = lo_x - 1, hi_x + 1

    def sx(x: float) -> float:
        return x0 + (min(max(x, lo_x), hi_x) - lo_x) / (hi_x - lo_x) * (x1 - x0)

    def sy(y: float) -> float:
        return y1 - (y - lo_y) / (hi_y - lo_y) * (y1 - y0)

    parts = [f"<g class='lightning-magic-panel'><title>{escape(name)}</title>",
             f"<rect x='{x0:.1f}' y='{y0:.1f}' width='{x1 - x0:.1f}' height='{y1 - y0:.1f}' "
             f"fill='none' stroke='{BORDER}'/>",
             f"<text x='{x0:.1f}' y='{top + 12:.1f}' fill='currentColor' font-weight='bold'>"
             f"{escape(_clip(name, 26))}</text>",
             f"<text x='{x1:.1f}' y='{top + 12:.1f}' fill='currentColor' text-anchor='end'>"
             f"{escape(number(ys[-1]))}</text>",
             _label(x0 - 3, y0 + 8, number(hi_y), "end"), _label(x0 - 3, y1, number(lo_y), "end"),
             _label(x0, y1 + 11, f"step {lo_x:.0f}", "start"),
             _label(x1, y1 + 11, f"{hi_x:.0f}", "end")]
    step, free_from = max(1, math.ceil(len(marks) / MAX_EPOCH_MARKS)), x0
    for epoch, start in list(marks)[::step]:
        x, text = sx(start), f"epoch {epoch}"
        if x > x0 + 0.5:
            parts.append(f"<line x1='{x:.1f}' y1='{y0:.1f}' x2='{x:.1f}' y2='{y1:.1f}' "
                         f"stroke='{BORDER}' stroke-dasharray='3 3'/>")
        room = 5 * len(text) + 4  # a label only where it has room: right of its line, else left
        if x >= free_from and x + room <= x1:
            parts.append(_label(x + 2, y0 + 9, text, "start"))
            free_from = x + room + 2
        elif x - room >= free_from:
            parts.append(_label(x - 2, y0 + 9, text, "end"))
            free_from = x + 2
    coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    if len(points) > 1:
        parts.append(f"<polyline points='{coords}' fill='none' stroke='{colour}' "
                     "stroke-width='1.5' stroke-linejoin='round'/>")
    if len(points) <= 40:
        parts += [f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='2' fill='{colour}'/>"
                  for x, y in points]
    return "".join(parts) + "</g>"


def _label(x: float, y: float, text: str, anchor: str) -> str:
    return (f"<text x='{x:.1f}' y='{y:.1f}' fill='{MUTED}' font-size='9' "
            f"text-anchor='{anchor}'>{escape(text)}</text>")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


# -- progress and summary ----------------------------------------------------------------------

def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes = f"{rest // 60:02d}:{rest % 60:02d}"
    return f"{hours}:{minutes}" if hours else minutes


def text_line(progress: Any, width: int = 100) -> str:
    """The whole view as one line, at most ``width`` characters."""
    fraction = progress.fraction()
    parts = progress.position()
    if fraction is not None:
        filled = int(round(fraction * TEXT_BAR))
        parts.append(f"[{'#' * filled}{'.' * (TEXT_BAR - filled)}] {fraction * 100:3.0f}%")
    parts.append(f"{duration(progress.elapsed())}<{duration(progress.eta())}")
    samples, steps = progress.rates()
    if samples is not None or steps is not None:
        parts.append(f"{samples:,.0f} samples/s" if samples is not None else f"{steps:.3g} steps/s")
    parts += [f"{name}={number(progress.metrics[name])}" for name in chart_order(progress.metrics)]
    line = " ".join(parts)
    return line if len(line) <= width else line[:max(0, width - 1)] + "…"


def _bar(fraction: Optional[float], colour: str = FILL, width: str = "100%") -> str:
    fill = "" if fraction is None else (
        f"<div style='width:{max(0.0, min(1.0, fraction)) * 100:.1f}%;height:100%;"
        f"background:{colour}'></div>")
    return (f"<div style='width:{width};height:8px;background:{TRACK};border-radius:4px;"
            f"overflow:hidden;display:inline-block;vertical-align:middle'>{fill}</div>")


def _gpu_rows(gpus: list[dict]) -> str:
    rows = []
    for reading in gpus:
        util, used, total = (finite(reading.get(key))
                             for key in ("utilization", "memory_used", "memory_total"))
        memory = used / total if used is not None and total else None
        rows.append(
            f"<tr><td>rank {escape(str(reading.get('rank', '?')))} · GPU "
            f"{escape(str(reading.get('index', '?')))}</td>"
            f"<td>{_bar(None if util is None else util / 100, PALETTE[2], '120px')} "
            f"{'n/a' if util is None else f'{util:.0f}%'}</td>"
            f"<td>{_bar(memory, PALETTE[4], '120px')} "
            f"{'n/a' if used is None else f'{used / _GIB:.1f}'} / "
            f"{'n/a' if total is None else f'{total / _GIB:.1f}'} GiB</td></tr>")
    if not rows:
        return ""
    return (f"<table style='margin:4px 0;font-size:inherit'><tr style='color:{MUTED}'><td></td>"
            f"<td>utilization</td><td>memory</td></tr>{''.join(rows)}</table>")


def live_html(title: str, progress: Any) -> str:
    """The view while training: ``progress`` is a ``live_view.Progress``."""
    fraction = progress.fraction()
    status = "finishing" if progress.ended else (
        "running" if progress.step is not None else "starting")
    facts = progress.position()
    if progress.elapsed() is not None:
        facts.append(f"{duration(progress.elapsed())} elapsed")
    if fraction is not None and fraction < 1 and progress.eta() is not None:
        facts.append(f"ETA {duration(progress.eta())}")
    if progress.rate_text():
        facts.append(progress.rate_text())
    metrics = "".join(
        f"<span style='margin-right:1.2em'><span style='color:{MUTED}'>{escape(name)}</span> "
        f"<b>{escape(number(progress.metrics[name]))}</b></span>"
        for name in chart_order(progress.metrics))
    percent = "" if fraction is None else f" {fraction * 100:.0f}%"
    return (f"<div class='lightning-magic-live' style='{BOX}'>"
            f"<div><b>{escape(title)}</b> <span style='color:{MUTED}'>{status}</span></div>"
            f"<div style='max-width:560px'>{_bar(fraction, width='85%')}{percent}</div>"
            f"<div>{escape(' · '.join(facts))}</div>"
            + (f"<div style='margin:2px 0'>{metrics}</div>" if metrics else "")
            + _gpu_rows(progress.gpus) + progress.chart() + "</div>")


def render_summary_html(run: Any) -> str:
    """A ``TrainingRun`` as HTML: status, elapsed, devices, final metrics, checkpoints, charts."""
    status = str(getattr(run, "status", "unknown"))
    good = status in ("finished", "checked")
    colour = "var(--jp-success-color1, #388e3c)" if good else "var(--jp-error-color1, #d32f2f)"
    processes = getattr(run, "num_processes", 1)
    rows = [("elapsed", f"{getattr(run, 'elapsed', 0.0):.1f} s"),
            ("devices", f"{getattr(run, 'accelerator', None)} {getattr(run, 'devices', None)} "
                        f"({processes} process{'es' if processes != 1 else ''})"),
            ("strategy", str(getattr(run, "strategy", None))),
            ("precision", str(getattr(run, "precision", None)))]
    if status == "checked" and hasattr(run, "check_summary"):
        rows.append(("check", run.check_summary()))
    elif getattr(run, "epochs", None) is not None:
        rows.append(("epochs / steps", f"{run.epochs} / {getattr(run, 'global_step', None)}"))
    for label, attr in (("best checkpoint", "best_model_path"),
                        ("last checkpoint", "last_model_path")):
        if getattr(run, attr, None):
            rows.append((label, str(getattr(run, attr))))
    report = getattr(run, "report", None)
    if report is not None:
        rows.append(("what happened", str(getattr(report, "title", report))))
    if getattr(run, "warnings", None):
        rows.append(("warnings", f"{len(run.warnings)} (see .warnings)"))
    metrics = getattr(run, "metrics", None) or {}
    cell = "text-align:left;padding:1px 1em 1px 0;vertical-align:top"
    details = "".join(
        f"<tr><th style='{cell}'>{escape(k)}</th><td style='{cell}'>{escape(v)}</td></tr>"
        for k, v in rows)
    finals = "".join(
        f"<tr><th style='{cell}'>{escape(str(name))}</th><td style='{cell}'>"
        f"{escape(number(value) if finite(value) is not None else str(value))}</td></tr>"
        for name, value in sorted(metrics.items(), key=lambda item: str(item[0])))
    table = "<table style='margin:0;font-size:inherit'>"
    metric_table = (f"{table}<tr><th colspan='2' style='{cell};color:{MUTED}'>final metrics</th>"
                    f"</tr>{finals}</table>") if finals else ""
    return (f"<div class='lightning-magic-run' style='{BOX}'><b>TrainingRun</b> "
            f"<span style='color:{colour};font-weight:bold'>{escape(status)}</span>"
            "<div style='display:flex;flex-wrap:wrap;align-items:flex-start;gap:2em;"
            "margin-top:0.3em'>"
            f"{table}{details}</table>{metric_table}</div>"
            + render_chart_svg(getattr(run, "history", None) or []) + "</div>")
