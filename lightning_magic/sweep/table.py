"""The sweep's live table, in the cell's output: one row a trial (its parameters, status, epoch
and step, metric, devices), shown once and updated in place (an IPython display handle)."""

from __future__ import annotations

import html
import threading
from typing import Any

from .results import _params

COLUMNS = ("trial", "params", "status", "progress", "metric", "devices", "note")


class Table:
    """The rows of a sweep, as text and HTML."""

    def __init__(self, sweep: Any) -> None:
        metric = sweep.metric
        self.columns = COLUMNS[:4] + (metric,) + COLUMNS[5:]
        self.rows = [(str(r.number), _params(r.params), r.status, r.progress(),
                      _text(r.live_value(metric)), r.slot.describe(), r.note)
                     for r in sweep.trials]

    def __repr__(self) -> str:
        table = [self.columns] + self.rows
        widths = [max(len(row[i]) for row in table) for i in range(len(self.columns))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
                         for row in table)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                       for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class LiveTable:
    """Shown in the cell that is running; with ``origin`` (the sweep cell's ``Origin``) updated
    there from any thread, while other cells run."""

    def __init__(self, sweep: Any) -> None:
        self.sweep = sweep
        self.handle: Any = None
        self.origin: Any = None
        self._lock = threading.Lock()

    def show(self) -> None:
        from IPython.display import display

        self.handle = display(Table(self.sweep), display_id=True)

    def update(self) -> None:
        if self.handle is None:
            return
        with self._lock:
            if self.origin is None:
                self.handle.update(Table(self.sweep))
                return
            with self.origin():
                self.handle.update(Table(self.sweep))


def _text(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)
