"""How a run reads: its progress as HTML or one text line, and its summary (the run's own rows,
its final metrics and its charts). Pure functions of what they are given; nothing here displays
anything. The charts are drawn by ``charts``. Every name and value that reaches the markup is
escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any, Optional

from .charts import (
    MAX_POINTS,
    MUTED,
    PALETTE,
    Point,
    chart_order,
    finite,
    mean,
    render_chart_svg,
    render_series_svg,
)

__all__ = ["MAX_POINTS", "Point", "chart_order", "finite", "mean", "render_chart_svg",
           "render_series_svg", "duration", "text_line", "live_html", "render_summary_html",
           "number", "epoch_text"]

TRACK = "rgba(127, 127, 127, 0.22)"
FILL = "var(--jp-brand-color1, #1976d2)"
TEXT = "var(--jp-ui-font-color1, inherit)"
BOX = ("font-family:var(--jp-ui-font-family, system-ui, sans-serif);"
       "font-size:var(--jp-ui-font-size1, 13px);line-height:1.45")
TEXT_BAR = 20
_GIB = 1024**3
# A marker beside the status word (the word itself stays in the text colour, readable anywhere).
STATUS_COLOURS = {"finished": "var(--jp-success-color1, #388e3c)",
                  "checked": "var(--jp-success-color1, #388e3c)",
                  "interrupted": "var(--jp-brand-color1, #1976d2)",
                  "failed": "var(--jp-error-color1, #d32f2f)",
                  "timeout": "var(--jp-error-color1, #d32f2f)"}


def number(value: float) -> str:
    """A metric value as people read it: four significant digits."""
    return f"{value:.4g}"


def epoch_text(epoch: int, max_epochs: Optional[int] = None) -> str:
    """An epoch as Lightning names it: its index (``trainer.current_epoch``, the ``epoch=`` of a
    checkpoint's file name), and the last index when there is a limit, as Lightning's
    RichProgressBar writes it: "epoch 33/299" for the 34th of ``max_epochs=300``."""
    return f"epoch {epoch}" + (f"/{max_epochs - 1}" if max_epochs else "")


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
    elapsed = progress.elapsed()
    if elapsed is None and not parts:  # no event from rank 0 yet: no time to show either
        parts.append("starting")
    else:
        parts.append(f"{duration(elapsed)}<{duration(progress.eta())}")
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
    """The view while training: ``progress`` is a ``progress.Progress``."""
    fraction = progress.fraction()
    status = progress.outcome or ("finishing" if progress.ended else (
        "running" if progress.step is not None else "starting"))
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
    return (f"<div class='lightning-magic-live' style='{BOX};color:{TEXT}'>"
            f"<div><b>{escape(title)}</b> <span style='color:{MUTED}'>{escape(status)}</span></div>"
            f"<div style='max-width:560px'>{_bar(fraction, width='85%')}{percent}</div>"
            f"<div>{escape(' · '.join(facts))}</div>"
            + (f"<div style='margin:2px 0'>{metrics}</div>" if metrics else "")
            + _gpu_rows(progress.gpus) + progress.chart() + "</div>")


def _table(rows: list[tuple[str, str]], heading: str = "") -> str:
    cell = "text-align:left;padding:1px 1em 1px 0;vertical-align:top"
    body = "".join(f"<tr><th style='{cell}'>{escape(k)}</th><td style='{cell};"
                   f"overflow-wrap:anywhere'>{escape(v)}</td></tr>" for k, v in rows)
    head = (f"<tr><th colspan='2' style='{cell};color:{MUTED}'>{escape(heading)}</th></tr>"
            if heading else "")
    return f"<table style='margin:0;font-size:inherit;color:inherit'>{head}{body}</table>"


class ModelTable:
    """Lightning's model summary table, shown where plain Lightning logs it (as a fit starts):
    as text, and in a notebook folded in ``<details>`` (its totals in view) when it is long."""

    FOLD_LINES = 20  # a model of about ten modules; a longer table is folded

    def __init__(self, text: str) -> None:
        self.text = text.strip("\n")

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        lines = self.text.splitlines()
        table = (f"<pre style='margin:2px 0;font-size:var(--jp-code-font-size, 12px)'>"
                 f"{escape(self.text)}</pre>")
        if len(lines) <= self.FOLD_LINES:
            return table
        total = next((line for line in lines if line.rstrip().endswith("Total params")), "")
        count = total.rsplit("Total params", 1)[0].strip()
        named = f"Model summary: {count} parameters" if count else "Model summary"
        return (f"<details class='lightning-magic-model-summary'><summary style='cursor:pointer'>"
                f"{escape(named)} ({len(lines)} lines)</summary>{table}</details>")


def render_summary_html(run: Any) -> str:
    """A ``TrainingRun`` as HTML: its headline, its rows (``run.rows()``), its final metrics
    (``run.metric_rows()``), the notes the cell did not print (``run.later_notes``) and the
    charts of its history. A checked run shows no charts:
    nothing was trained."""
    status = str(run.status)
    marker = (f"<span aria-hidden='true' style='display:inline-block;width:0.7em;height:0.7em;"
              f"border-radius:50%;margin:0 0.35em 0 0.5em;background:"
              f"{STATUS_COLOURS.get(status, MUTED)}'></span>")
    metric_rows = run.metric_rows() if status != "checked" else []
    tables = _table(run.rows()) + (_table(metric_rows, "final metrics") if metric_rows else "")
    charts = render_chart_svg(run.history or []) if status != "checked" else ""
    notes = "".join(f"<div>{escape(note)}</div>" for note in run.later_notes)
    return (f"<div class='lightning-magic-run' data-status='{escape(status)}' "
            f"style='{BOX};color:{TEXT}'><b>TrainingRun</b>{marker}"
            f"<b>{escape(run.headline)}</b>"
            "<div style='display:flex;flex-wrap:wrap;align-items:flex-start;gap:0.5em 2em;"
            f"margin-top:0.3em'>{tables}</div>"
            + (f"<div class='lightning-magic-notes' style='margin-top:0.3em'>{notes}</div>"
               if notes else "") + f"{charts}</div>")
