"""The code of a cell and of the earlier cells it depends on, as a script would run it.

A cell's code comes from the kernel's input history. IPython's own input transformer
(``shell.transform_cell``) turns magics and shell escapes into ``get_ipython()`` calls, which a
script cannot make: statements holding them are left out, except that ``%time`` and the bodies
of ``%%time``, ``%%capture`` and (training, not exporting) ``%%lightning_train`` cells ran as
ordinary code and are kept. Display-only lines are left out too. Dependencies are resolved by
name: for each name a cell reads before binding it, the latest earlier cell that binds it, and,
in turn, what that cell reads. This module knows nothing of Lightning and writes no files.
"""

from __future__ import annotations

import ast
import inspect
import shlex
import sys
from dataclasses import dataclass

from ..source.names import ALWAYS_DEFINED, ModuleNames, statement_binds

# Cell magics whose body runs as ordinary code in the user's namespace.
_CODE_CELL_MAGICS = {"time", "capture", "lightning_train"}

# Methods whose result a notebook cell ends with only to look at it, as in ``df.head()``.
_LOOK_METHODS = {"head", "tail", "describe", "info", "sample", "summary", "show"}


@dataclass(frozen=True)
class CellCode:
    """One cell's code as a script runs it, and the names it reads and binds."""

    number: int  # execution count: the cell is In[number]
    code: str
    binds: frozenset[str]  # names the cell binds at module level
    needs: frozenset[str]  # names it reads before binding them: must come from earlier cells
    wants: frozenset[str]  # names one statement reads and rebinds (``df = df.dropna()``)
    star_modules: tuple[str, ...]  # modules the cell imports ``*`` from
    escape_bound: frozenset[str]  # names bound only by a left-out magic or shell escape
    future_imports: tuple[str, ...]  # ``from __future__`` lines, which a script needs first

    @property
    def label(self) -> str:
        return f"In[{self.number}]"


def earlier_cells(shell, number: int) -> list[tuple[int, str]]:
    """``(execution count, raw source)`` of this session's cells before ``In[number]``, the
    current one (``source.editor.cell_number``)."""
    raw = shell.history_manager.input_hist_raw
    end = min(number, len(raw))
    return [(n, raw[n]) for n in range(1, end) if raw[n].strip()]


def cell_code(shell, number: int, source: str) -> CellCode:
    """Clean one raw cell (see the module docstring) and find the names it reads and binds."""
    code, escape_bound, futures = _clean(shell, source)
    tree = _parse(code)
    reads = ModuleNames()
    if tree is not None:
        for statement in tree.body:
            reads.statement(statement)
    binds = frozenset(reads.bound | reads.global_stores)
    needs = (reads.needs | (reads.deferred - binds)) - ALWAYS_DEFINED
    return CellCode(
        number=number,
        code=code,
        binds=binds,
        needs=frozenset(needs),
        wants=frozenset(reads.wants - needs - ALWAYS_DEFINED),
        star_modules=tuple(reads.star_modules),
        escape_bound=frozenset(escape_bound - binds),
        future_imports=tuple(futures),
    )


@dataclass(frozen=True)
class Unresolved:
    name: str
    used_in: str  # a cell label, or "this cell"
    escape_cell: str | None  # label of a cell where a magic or shell escape bound the name


def dependencies(
    target: CellCode, history: list[CellCode], extra_names: tuple[str, ...] = ()
) -> tuple[list[CellCode], list[Unresolved]]:
    """The earlier cells ``target`` depends on, in execution order, and what none of them binds.

    ``history`` is in execution order. ``extra_names`` are read by the target as if its code
    used them (the objects ``--model`` and ``--data`` name).
    """
    included: dict[int, CellCode] = {}
    unresolved: dict[str, Unresolved] = {}
    seen: set[tuple[int, str]] = set()
    # (index into history that the provider must precede, name, required, label of the reader)
    work = [
        (len(history), name, True, "this cell") for name in sorted(target.needs | set(extra_names))
    ]
    work += [(len(history), name, False, "this cell") for name in sorted(target.wants)]
    while work:
        limit, name, required, reader = work.pop()
        if (limit, name) in seen or name in ALWAYS_DEFINED:
            continue
        seen.add((limit, name))
        index = _provider(history, limit, name)
        if index is None:
            if required and name not in unresolved:
                escape = next(
                    (c.label for c in reversed(history[:limit]) if name in c.escape_bound), None
                )
                unresolved[name] = Unresolved(name, reader, escape)
            continue
        if index in included:
            continue
        cell = history[index]
        included[index] = cell
        work += [(index, n, True, cell.label) for n in sorted(cell.needs)]
        work += [(index, n, False, cell.label) for n in sorted(cell.wants)]
    cells = [included[index] for index in sorted(included)]
    return cells, sorted(unresolved.values(), key=lambda u: u.name)


def _provider(history: list[CellCode], limit: int, name: str) -> int | None:
    """Index of the latest cell before ``limit`` that binds ``name``."""
    for index in range(limit - 1, -1, -1):
        cell = history[index]
        if name in cell.binds:
            return index
        for module_name in cell.star_modules:
            module = sys.modules.get(module_name)  # the kernel imported it when the cell ran
            if module is None:
                continue
            exported = getattr(module, "__all__", None)
            if exported is None:
                exported = [n for n in vars(module) if not n.startswith("_")]
            if name in exported:
                return index
    return None


# ---------------------------------------------------------------------------------------------
# Cleaning: IPython syntax and display-only lines out, the user's own text kept as written.


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except SyntaxError:  # the cell did not run in the kernel either
        return None


def _clean(shell, source: str) -> tuple[str, set[str], list[str]]:
    """``(code, names bound only by left-out lines, from __future__ lines)`` of one raw cell."""
    transformed = shell.transform_cell(source)
    tree = _parse(transformed)
    if tree is None:
        return "", set(), []
    lines = transformed.splitlines()
    escape_bound: set[str] = set()
    futures: list[str] = []
    last = len(tree.body) - 1
    replacements: list[tuple[int, int, str | None]] = []  # (first line, last line, new text)
    for position, statement in enumerate(tree.body):
        first = min(
            [statement.lineno] + [d.lineno for d in getattr(statement, "decorator_list", [])]
        )
        span = (first, statement.end_lineno)
        if isinstance(statement, ast.ImportFrom) and statement.module == "__future__":
            futures.append(ast.unparse(statement))
            replacements.append((*span, None))
        elif _is_display_only(statement, position == last, shell.user_ns, tree):
            replacements.append((*span, None))
        elif _calls_ipython(statement):
            kept = _code_run_by_magic(shell, statement, escape_bound, futures)
            if kept is None and not isinstance(
                statement, (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign)
            ):
                kept = ast.unparse(_without_ipython_calls(statement))
            if kept is None:
                escape_bound |= statement_binds(statement)
            replacements.append((*span, kept))
    return _apply(lines, tree, replacements), escape_bound, futures


def _apply(
    lines: list[str], tree: ast.Module, replacements: list[tuple[int, int, str | None]]
) -> str:
    """The cell's lines, with statements replaced or removed; comments stay where they were."""
    spans = {(a, b) for a, b, _ in replacements}
    # Statements sharing a line with a replaced one (``a = 1; !ls``) are rewritten with it.
    shared = [
        s
        for s in tree.body
        if (s.lineno, s.end_lineno) not in spans
        and any(s.lineno <= b and s.end_lineno >= a for a, b in spans)
    ]
    for statement in shared:
        replacements.append((statement.lineno, statement.end_lineno, ast.unparse(statement)))
    by_line: dict[int, list[str]] = {}
    removed: set[int] = set()
    for first, last, text in sorted(replacements, key=lambda r: (r[0], r[1])):
        removed.update(range(first, last + 1))
        if text is not None:
            by_line.setdefault(first, []).append(text)
    result = []
    for number, line in enumerate(lines, start=1):
        if number in by_line:
            result.extend(by_line[number])
        elif number not in removed:
            result.append(line)
    return "\n".join(result).strip("\n")


def _is_ipython_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "get_ipython"
    )


def _calls_ipython(node: ast.AST) -> bool:
    return any(_is_ipython_call(n) for n in ast.walk(node))


def _magic_call(statement: ast.stmt) -> tuple[str, list[str]] | None:
    """``(method, string arguments)`` of ``get_ipython().method('a', 'b')`` as a statement."""
    if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)):
        return None
    call = statement.value
    if not (isinstance(call.func, ast.Attribute) and _is_ipython_call(call.func.value)):
        return None
    if not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args):
        return None
    return call.func.attr, [a.value for a in call.args]


def _code_run_by_magic(shell, statement, escape_bound, futures) -> str | None:
    """The ordinary code a magic ran in the user's namespace (``%time x = f()``), if any."""
    call = _magic_call(statement)
    if call is None:
        return None
    method, args = call
    if method == "run_line_magic" and len(args) == 2 and args[0] == "time":
        body = args[1]
    elif method == "run_cell_magic" and len(args) == 3 and args[0] in _CODE_CELL_MAGICS:
        if args[0] == "lightning_train" and _exports(args[1]):
            return None  # an exported cell's body did not run
        body = args[2]
    else:
        return None
    code, inner_bound, inner_futures = _clean(shell, body)
    escape_bound |= inner_bound
    futures += inner_futures
    return code or None


def _exports(magic_line: str) -> bool:
    try:
        words = shlex.split(magic_line)
    except ValueError:
        words = magic_line.split()
    return any(w == "--export" or w.startswith("--export=") for w in words)


class _WithoutIPythonCalls(ast.NodeTransformer):
    def generic_visit(self, node):
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                kept = [s for s in block if not _calls_ipython(s)]
                if not kept and field == "body":
                    kept = [ast.Pass()]
                setattr(node, field, kept)
        return node


def _without_ipython_calls(statement: ast.stmt) -> ast.stmt:
    """A compound statement with the magics and shell escapes inside it left out."""
    return ast.fix_missing_locations(_WithoutIPythonCalls().visit(statement))


def _is_display_only(statement: ast.stmt, is_last: bool, namespace: dict, tree: ast.Module) -> bool:
    """``display(x)`` and bare expressions that call nothing, anywhere; ending the cell, the
    value it shows, unless that is a call other than a look (``df.head()``, ``MyModel()``).
    """
    if not isinstance(statement, ast.Expr):
        return False
    value = statement.value
    if isinstance(value, ast.Call):
        func = value.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name == "display":
            return True
        if not is_last:
            return False
        if isinstance(func, ast.Attribute):
            return func.attr in _LOOK_METHODS
        classes = {s.name for s in tree.body if isinstance(s, ast.ClassDef)}
        return isinstance(func, ast.Name) and (
            func.id in classes or inspect.isclass(namespace.get(func.id))
        )
    if is_last and not isinstance(value, (ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)):
        return True  # the value the cell shows, such as model or loader.dataset.tensors[0].shape
    acts = (ast.Call, ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)
    return not any(isinstance(n, acts) for n in ast.walk(value))
