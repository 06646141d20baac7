"""Cells as the notebook's editor shows them: the number in ``In [N]`` and the line numbers of
the code under the ``%%lightning_train`` line.

IPython 8 counts a cell after it ran (while ``In [5]`` runs, ``execution_count`` is 5); IPython
9 counts it before (while ``In [5]`` runs, it is already 6). ``cell_number`` does not rely on
either: while a cell runs, its source is the latest input in the shell's history, at index N.
"""

from __future__ import annotations

from typing import Any, Optional

# The body of a cell magic starts on the editor's line 2: line 1 is the ``%%`` line.
MAGIC_LINES = 1


def cell_number(shell: Any, body: Optional[str] = None) -> int:
    """The ``N`` of ``In [N]`` for the cell now running, whose magic body is ``body``.

    Where no cell holding ``body`` is running (a direct ``run_cell_magic`` call, or a cell not
    kept in history), it is the number the next cell gets, which is ``execution_count`` on
    IPython 8 and 9 alike. Without ``body``, the shell's display hook says (it numbers
    ``Out [N]`` for the running cell on both).
    """
    raw = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None)
    if body is not None:
        if isinstance(raw, list) and len(raw) > 1 and body.strip() and body.strip() in raw[-1]:
            return len(raw) - 1
        return int(shell.execution_count)
    count = getattr(getattr(shell, "displayhook", None), "prompt_count", None)
    return max(0, int(count if isinstance(count, int) else shell.execution_count))


def editor_source(cell: str) -> str:
    """The cell body with its line numbers as the editor shows them (the ``%%`` line counted)."""
    return "\n" * MAGIC_LINES + cell


def compile_cell(shell: Any, cell: str) -> Any:
    """The cell body compiled under the name IPython gives the cell being run, so tracebacks and
    reports say ``cell In [N], line L`` with the editor's ``N`` and ``L``."""
    source = editor_source(cell)
    filename = shell.compile.cache(source, cell_number(shell, cell), raw_code=source)
    return shell.compile(source, filename, "exec")
