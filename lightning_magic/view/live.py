"""The live training view: one display, updated in place from rank 0's progress events.

In a notebook (any frontend that renders HTML: JupyterLab, Notebook 7, VS Code) the view is plain
HTML with an inline SVG chart, no JavaScript and no widget, updated through its display id at most
once per ``min_interval``; at the end it becomes the run's summary. In a terminal IPython it is a
single text line rewritten with ``\\r``, first written at the first step. Events arrive on the
caller's thread; the drawing itself is in ``render`` and ``charts``. Epochs are named as Lightning
names them (``render.epoch_text``): epoch 0/79 ... epoch 79/79.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Optional

from .origin import Origin
from .render import (
    MAX_POINTS,
    Point,
    chart_order,
    epoch_text,
    finite,
    live_html,
    mean,
    render_chart_svg,
    render_series_svg,
    render_summary_html,
    text_line,
)

MODES = ("live", "bar", "none")

__all__ = ["LiveView", "render_summary_html", "render_chart_svg", "frontend"]


def frontend(shell: Any = None) -> str:
    """``"html"`` where displays reach a frontend that renders HTML, ``"text"`` in a terminal.

    A terminal IPython publishes displays through the base ``DisplayPublisher`` (it prints
    text/plain); a Jupyter kernel (ZMQInteractiveShell) and captured output use their own.
    """
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        return "text"
    from IPython.core.displaypub import DisplayPublisher

    return "text" if type(getattr(shell, "display_pub", None)) in (DisplayPublisher, type(None)) \
        else "html"


def _count(value: Any) -> Optional[int]:
    """A positive, finite count, else None (Lightning uses -1 and inf for "no limit")."""
    value = finite(value)
    return int(value) if value is not None and value > 0 else None


class _Series:
    """Points of one metric, kept at most ``2 * MAX_POINTS``: each stored point averages
    ``stride`` consecutive ones, and the stride doubles whenever the store fills up."""

    def __init__(self) -> None:
        self.points: list[Point] = []
        self.stride = 1
        self._pending: list[Point] = []

    def add(self, x: float, y: float) -> None:
        self._pending.append((x, y))
        if len(self._pending) >= self.stride:
            self.points.append(mean(self._pending))
            self._pending = []
        if len(self.points) >= 2 * MAX_POINTS:
            self.points = [mean(self.points[i:i + 2]) for i in range(0, len(self.points), 2)]
            self.stride *= 2

    def view(self) -> list[Point]:
        return self.points + ([mean(self._pending)] if self._pending else [])


class Progress:
    """What the events said so far: limits, position, latest metrics, series and GPU readings."""

    def __init__(self, world_size: int = 1) -> None:
        self.world_size = world_size
        self.started: Optional[float] = None
        self.now: Optional[float] = None
        self.max_epochs = self.max_steps = self.total_batches = self.batch_size = None
        self.epoch: Optional[int] = None
        self.step = self.batch = None  # Optional[int] each
        self.metrics: dict[str, float] = {}
        self.series: dict[str, _Series] = {}
        self.epochs: list[tuple[int, float]] = []
        self.gpus: list[dict] = []
        self.ended = False
        self.outcome: Optional[str] = None  # how the run ended, where the view is told it
        self._recent: deque = deque(maxlen=32)  # (time, samples, step)
        self._first: Optional[tuple[float, float]] = None  # (time, fraction) at the first step
        self._validation: set[str] = set()  # metrics whose last new value a validation gave

    def apply(self, event: dict) -> None:
        kind, when = event.get("kind"), finite(event.get("time"))
        if when is not None:
            self.now = when if self.now is None else max(self.now, when)
            self.started = when if self.started is None else self.started
        if kind == "start":
            self.started = when if when is not None else self.started
            self.max_epochs = _count(event.get("max_epochs"))
            self.max_steps = _count(event.get("max_steps"))
            self.total_batches = _count(event.get("total_batches"))
            self.batch_size = _count(event.get("batch_size"))
            self.world_size = _count(event.get("world_size")) or self.world_size
        elif kind in ("step", "validation"):
            self.epoch = event.get("epoch", self.epoch)
            self.step = event.get("step", self.step)
            shown = self.epoch_shown()
            if shown is not None and isinstance(self.step, (int, float)) \
                    and (not self.epochs or shown > self.epochs[-1][0]):
                self.epochs.append((shown, float(self.step)))
            for name, value in (event.get("metrics") or {}).items():
                name, value = str(name), finite(value)
                if value is None:
                    continue
                if self._charts(name, value, kind) and isinstance(self.step, (int, float)):
                    self.series.setdefault(name, _Series()).add(float(self.step), value)
                self.metrics[name] = value
            if kind == "step":
                self.batch = event.get("batch", self.batch)
                self._recent.append((when, finite(event.get("samples")), finite(self.step)))
                fraction = self.fraction()
                if self._first is None and when is not None and fraction is not None:
                    self._first = (when, fraction)
        elif kind == "gpu":
            self.gpus = [r for r in event.get("ranks") or [] if isinstance(r, dict)]
        elif kind == "end":
            self.ended = True

    def _charts(self, name: str, value: float, kind: str) -> bool:
        """Whether this value is a point of its chart as the summary draws it: a validation's
        metrics once a validation (step events carry them on unchanged), a step's every step."""
        new = self.metrics.get(name) != value
        if kind == "validation" and new:
            self._validation.add(name)
        elif kind != "validation" and (new or name not in self._validation):
            self._validation.discard(name)
            return True
        return new and kind == "validation"

    def fraction(self) -> Optional[float]:
        """How far the run is, 0..1, by whichever limit (steps or epochs) ends it first."""
        done = []
        if self.max_steps and isinstance(self.step, (int, float)):
            done.append(self.step / self.max_steps)
        if self.max_epochs and self.total_batches and isinstance(self.epoch, int):
            batch = self.batch + 1 if isinstance(self.batch, int) else 0
            in_epoch = min(batch, self.total_batches) / self.total_batches
            done.append((self.epoch + in_epoch) / self.max_epochs)
        return min(1.0, max(done)) if done else None

    def elapsed(self) -> Optional[float]:
        return None if self.started is None or self.now is None else self.now - self.started

    def eta(self) -> Optional[float]:
        fraction = self.fraction()
        if self._first is None or fraction is None or self.now is None:
            return None
        t0, f0 = self._first
        if fraction <= f0 or self.now <= t0:
            return None
        return (self.now - t0) / (fraction - f0) * (1.0 - fraction)

    def rates(self) -> tuple[Optional[float], Optional[float]]:
        """(samples/s, steps/s) over the latest steps."""
        if len(self._recent) < 2:
            return None, None
        (t0, s0, k0), (t1, s1, k1) = self._recent[0], self._recent[-1]
        if t0 is None or t1 is None or t1 <= t0:
            return None, None
        samples = (s1 - s0) / (t1 - t0) if s0 is not None and s1 is not None else None
        steps = (k1 - k0) / (t1 - t0) if k0 is not None and k1 is not None else None
        return samples, steps

    def epoch_shown(self) -> Optional[int]:
        """The epoch in progress, Lightning's ``current_epoch``; after the last one Lightning's
        count moves past the end, and this stays on the last."""
        if not isinstance(self.epoch, int):
            return None
        return min(self.epoch, self.max_epochs - 1) if self.max_epochs else self.epoch

    def position(self) -> list[str]:
        """["epoch 1/3", "step 120 of 500"]: epochs as Lightning names them."""
        parts = []
        epoch = self.epoch_shown()
        if epoch is not None:
            parts.append(epoch_text(epoch, self.max_epochs))
        if self.step is not None:
            parts.append(f"step {self.step}" + (f" of {self.max_steps}" if self.max_steps else ""))
        return parts

    def rate_text(self) -> str:
        samples, steps = self.rates()
        if samples is not None:
            return f"{samples:,.0f} samples/s" + (f" ({steps:.3g} steps/s)" if steps else "")
        return f"{steps:.3g} steps/s" if steps is not None else ""

    def chart(self) -> str:
        series = {name: self.series[name].view() for name in chart_order(self.series)}
        return render_series_svg(series, self.epochs)


class LiveView:
    """One display of a training run, updated in place, throttled, and ended by its summary."""

    def __init__(self, title: str, mode: str = "live", world_size: int = 1,
                 min_interval: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode {mode!r} is not one of {', '.join(MODES)}.")
        self.title, self.mode, self.min_interval, self.clock = title, mode, min_interval, clock
        self.progress = Progress(world_size)
        self.display_id = uuid.uuid4().hex
        self._frontend: Optional[str] = None
        self._lock = threading.RLock()
        self._last: Optional[float] = None    # clock() at the latest render
        self._dirty = False
        self._timer: Optional[threading.Timer] = None
        self._shown = False                   # the display (or the text line) exists
        self._line_width = 0
        self._finished = False
        self.origin = Origin()                # the cell this view's outputs belong to

    def start(self) -> None:
        with self._lock:
            self._frontend = frontend()
            if self.mode == "live" and self._frontend == "html":
                self._render()

    def update(self, event: dict) -> None:
        with self._lock:
            if self._finished:
                return
            self.progress.apply(event)
            if self.mode != "live":
                return
            if self._frontend is None:
                self._frontend = frontend()
            now = self.clock()
            wait = 0.0 if self._last is None else self.min_interval - (now - self._last)
            if wait <= 0:
                self._render()
            else:
                self._dirty = True  # the latest state is drawn when the interval is over
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._flush)
                    self._timer.daemon = True
                    self._timer.start()

    def _end(self) -> bool:
        """Stop drawing; False when the view had already ended. Call under the lock."""
        if self._finished:
            return False
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
        return True

    def finish(self, run: Any) -> None:
        with self._lock:
            if not self._end():
                return
            kind = self._frontend or frontend()
            if kind == "text":
                if self.mode == "live" and self._shown:
                    self._write_line(end="\n")
                return
            if run is None and self.mode != "live":
                return
            if run is not None:
                html, text = render_summary_html(run), repr(run)
            else:
                html, text = live_html(self.title, self.progress), text_line(self.progress)
            self._publish(html, text, update=self.mode == "live" and self._shown)

    def close(self) -> None:
        """End the view and leave nothing of it: the cell's value (the run's summary) follows."""
        with self._lock:
            if not self._end() or not self._shown:
                return
            if self._frontend == "text":
                self._write_line(end="\n")
            else:
                self._publish("", "", update=True)

    # -- rendering, always under the lock -------------------------------------------------------
    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            if self._dirty and not self._finished:
                self._render()

    def _render(self) -> None:
        if self._frontend == "text" and self.progress.step is None:
            return  # no line for a run that never reached a step
        self._last, self._dirty = self.clock(), False
        if self._frontend == "text":
            self._write_line()
        else:
            self._publish(live_html(self.title, self.progress), text_line(self.progress),
                          update=self._shown)

    def _publish(self, html: str, text: str, update: bool) -> None:
        from IPython.display import display

        with self.origin():
            display({"text/html": html, "text/plain": text}, raw=True,
                    display_id=self.display_id, update=update)
        self._shown = True

    def _write_line(self, end: str = "") -> None:
        width = shutil.get_terminal_size((100, 20)).columns - 1
        line = text_line(self.progress, width)
        with self.origin():
            sys.stdout.write("\r" + line.ljust(self._line_width) + end)
            sys.stdout.flush()
        self._line_width, self._shown = len(line), True
