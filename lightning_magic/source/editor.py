"""Cells as the notebook's editor shows them: the number in ``In [N]``, the cell's own text and
the line numbers of the code under the ``%%lightning_train`` line.

IPython 8 counts a cell after it ran (while ``In [5]`` runs, ``execution_count`` is 5); IPython
9 counts it before (while ``In [5]`` runs, it is already 6). ``cell_number`` does not rely on
either: while a cell runs, its source is the latest input in the shell's history, at index N.
"""

from __future__ import annotations

import ast
from typing import Any, Optional

# The body of a cell magic starts on the editor's line 2: line 1 is the ``%%`` line.
MAGIC_LINES = 1


def _running_cell(shell: Any, body: str) -> Optional[tuple[int, str]]:
    """``(N, raw text)`` of the cell now running, where it holds the magic body ``body``."""
    raw = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None)
    if isinstance(raw, list) and len(raw) > 1 and body.strip() and body.strip() in raw[-1]:
        return len(raw) - 1, raw[-1]
    return None


def cell_number(shell: Any, body: Optional[str] = None) -> int:
    """The ``N`` of ``In [N]`` for the cell now running, whose magic body is ``body``.

    Where no cell holding ``body`` is running (a direct ``run_cell_magic`` call, or a cell not
    kept in history), it is the number the next cell gets, which is ``execution_count`` on
    IPython 8 and 9 alike. Without ``body``, the shell's display hook says (it numbers
    ``Out [N]`` for the running cell on both).
    """
    if body is not None:
        running = _running_cell(shell, body)
        return running[0] if running else int(shell.execution_count)
    count = getattr(getattr(shell, "displayhook", None), "prompt_count", None)
    return max(0, int(count if isinstance(count, int) else shell.execution_count))


def _lines_above(text: str, body: str) -> Optional[int]:
    """How many of the editor's lines of ``text`` come before the magic body ``body``."""
    lines, wanted = text.splitlines(), body.splitlines()
    while wanted and not wanted[-1].strip():
        wanted.pop()
    for start in range(len(lines) - len(wanted) + 1):
        if lines[start:start + len(wanted)] == wanted:
            return start
    return None


def editor_view(shell: Any, body: str, python: str) -> tuple[str, int]:
    """``(text, lines above)``: the cell as the editor shows it, for tracebacks (its ``%%`` line
    and the user's own lines, where ``python``, the body as IPython transformed it, keeps their
    line numbers), and how many lines of it come before the body."""
    running = _running_cell(shell, body)
    above = _lines_above(running[1], body) if running else None
    if above is None:
        return "\n" * MAGIC_LINES + python, MAGIC_LINES
    head = running[1].splitlines(keepends=True)[:above]
    if len(python.splitlines()) == len(body.splitlines()):
        return "".join(head) + body, above
    return "".join(head) + python, above  # a transform joined lines: show what ran


def parse_cell(shell: Any, body: str) -> tuple[ast.Module, str]:
    """The magic body parsed with the editor's line numbers, and the file name it compiles under:
    IPython's name for the running cell, so tracebacks and reports say ``Cell In[N], line L`` and
    show the cell's own lines. In a kernel that is the cell's own file for the debugger too."""
    python = shell.transform_cell(body)
    text, above = editor_view(shell, body, python)
    running = _running_cell(shell, body)
    # ipykernel names a cell's file after its raw text: the same file as the cell's own
    filename = shell.compile.cache(text, cell_number(shell, body),
                                   raw_code=running[1] if running else text)
    return shell.compile.ast_parse("\n" * above + python, filename), filename
