"""The live training view: one display, updated in place from rank 0's progress events.

In a notebook (any frontend that renders HTML: JupyterLab, Notebook 7, VS Code) the view is plain
HTML with an inline SVG chart, no JavaScript and no widget, updated through its display id at most
once per ``min_interval``; at the end it becomes the run's summary. In a terminal IPython it is a
single text line rewritten with ``\\r``, first written at the first step. Events arrive on the
caller's thread and are kept by ``progress``; the drawing is in ``render`` and ``charts``.
Epochs are named as Lightning names them (``render.epoch_text``): epoch 0/79 ... epoch 79/79.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
import uuid
from typing import Any, Callable, Optional

from .origin import Origin
from .progress import Progress
from .render import live_html, render_chart_svg, render_summary_html, text_line

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
