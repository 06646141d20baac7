"""Running the ``%%lightning_train`` cell itself, in the notebook's namespace, as IPython would:
magics and shell escapes in it work, and its last expression is its value."""

from __future__ import annotations

import ast
from typing import Any

from ...source.editor import compile_cell

VALUE = "__lightning_magic_cell_value__"


def execute(shell: Any, cell: str) -> Any:
    """Run ``cell``; return the value of its last line when that is an expression, else None."""
    source = shell.transform_cell(cell)
    source, has_value = _capture_last_expression(source)
    namespace = shell.user_ns
    code = compile_cell(shell, source)
    try:
        exec(code, shell.user_global_ns, namespace)  # noqa: S102 - the user's own cell
        return namespace.get(VALUE) if has_value else None
    finally:
        namespace.pop(VALUE, None)


def _capture_last_expression(source: str) -> tuple[str, bool]:
    """The source with its last expression statement turned into an assignment, on the same
    lines (so tracebacks keep the cell's line numbers)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source, False  # compiling reports it, with the line
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return source, False
    last = tree.body[-1]
    if source.rstrip().endswith(";"):
        return source, False  # a trailing semicolon hides the value, as in IPython
    lines = [line.encode() for line in source.splitlines(keepends=True)]  # ast counts bytes
    start, end = last.lineno - 1, last.end_lineno - 1
    opening = VALUE.encode() + b" = ("
    if end == start:
        line = lines[start]
        lines[start] = (line[:last.col_offset] + opening
                        + line[last.col_offset:last.end_col_offset] + b")"
                        + line[last.end_col_offset:])
    else:
        lines[start] = lines[start][:last.col_offset] + opening + lines[start][last.col_offset:]
        lines[end] = lines[end][:last.end_col_offset] + b")" + lines[end][last.end_col_offset:]
    return b"".join(lines).decode(), True
