"""Cells as the notebook's editor shows them: the number in ``In [N]`` and the line numbers of
the code under the ``%%lightning_train`` line."""

from __future__ import annotations

from typing import Any


def compile_cell(shell: Any, cell: str) -> Any:
    """The cell body compiled under the name IPython gives the cell being run, so tracebacks and
    reports point at that cell."""
    filename = shell.compile.cache(cell, shell.execution_count)
    return shell.compile(cell, filename, "exec")
