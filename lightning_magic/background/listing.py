"""``%lightning_runs``: this kernel's background runs, one row each."""

from __future__ import annotations

import html
from typing import Any

COLUMNS = ("id", "model", "call", "status", "progress", "devices", "cell")


class RunList:
    def __init__(self, runs: list[Any]) -> None:
        self.rows = [(run.id, run.model_name, run.stage, run.status, run.progress(),
                      run.devices, f"In [{run.cell}]" if run.cell is not None else "")
                     for run in runs]

    def __repr__(self) -> str:
        if not self.rows:
            return "No background runs in this kernel (%%lightning_train --background starts one)."
        table = [COLUMNS] + [tuple(str(v) for v in row) for row in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
                         for row in table)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        if not self.rows:
            return f"<p>{html.escape(repr(self))}</p>"
        head = "".join(f"<th>{c}</th>" for c in COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                       for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
