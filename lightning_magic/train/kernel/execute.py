"""Running the ``%%lightning_train`` cell itself, in the notebook's namespace, as IPython would:
magics and shell escapes in it work, and its last expression is its value."""

from __future__ import annotations

import ast
from typing import Any

from ...source.editor import parse_cell

VALUE = "__lightning_magic_cell_value__"


def execute(shell: Any, cell: str) -> Any:
    """Run ``cell``; return the value of its last line when that is an expression, else None."""
    __tracebackhide__ = True  # an error in the cell shows the cell, as IPython shows it
    tree, filename = parse_cell(shell, cell)
    has_value = _capture_last_expression(tree, cell)
    namespace = shell.user_ns
    code = shell.compile(tree, filename, "exec")
    try:
        exec(code, shell.user_global_ns, namespace)  # noqa: S102 - the user's own cell
        return namespace.get(VALUE) if has_value else None
    except NameError as error:
        from ...suggestions.names import note_did_you_mean

        note_did_you_mean(error)
        raise
    finally:
        namespace.pop(VALUE, None)


def _capture_last_expression(tree: ast.Module, cell: str) -> bool:
    """Turn the last statement, where it is an expression, into an assignment to ``VALUE`` in
    place, with the expression's own position: the source shown stays the cell's."""
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return False
    if cell.rstrip().endswith(";"):
        return False  # a trailing semicolon hides the value, as in IPython
    last = tree.body[-1]
    target = ast.copy_location(ast.Name(id=VALUE, ctx=ast.Store()), last)
    tree.body[-1] = ast.copy_location(ast.Assign(targets=[target], value=last.value), last)
    ast.fix_missing_locations(tree)
    return True
