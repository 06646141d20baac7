"""What a cell's code reads from the notebook's namespace, and what it binds there: the one
definition for training (which names the cell bound) and for ``--export`` (which earlier cells a
cell needs).

Walks a cell's statements in the order they run, so that ``df = df.dropna()`` reads an earlier
``df`` and ``x = 1; print(x)`` does not, and treats function bodies as running later: a name
they read may be bound anywhere in the cell. Comprehension variables, parameters and function
locals are not the module's; a name a function declares ``global`` and assigns is. Pure ``ast``
work: no IPython, no kernel.
"""

from __future__ import annotations

import ast
import builtins

# Names a script has without any import. IPython adds its own to builtins while a cell runs.
_IPYTHON_BUILTINS = {"display", "get_ipython", "__IPYTHON__", "_ip", "ip"}
ALWAYS_DEFINED = frozenset(
    (set(dir(builtins)) - _IPYTHON_BUILTINS)
    | {
        "__name__",
        "__file__",
        "__doc__",
        "__builtins__",
        "__spec__",
        "__loader__",
        "__package__",
        "__annotations__",
    }
)

_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _scan(node: ast.AST, local: frozenset[str]) -> tuple[list[str], set[str], set[str], set[str]]:
    """``(reads, stores, deferred reads, global stores)`` of code run in one scope, now.

    ``local`` holds names that belong to an enclosing comprehension or function, not to the
    module. Function and lambda bodies run later: what they read from the module is deferred.
    """
    reads: list[str] = []
    stores: set[str] = set()
    deferred: set[str] = set()
    global_stores: set[str] = set()

    def visit(n: ast.AST, local: frozenset[str]) -> None:
        if isinstance(n, ast.Name):
            if isinstance(n.ctx, ast.Store):
                stores.add(n.id)
            elif n.id not in local:
                reads.append(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for part in _evaluated_at_definition(n):
                visit(part, local)
            if not isinstance(n, ast.Lambda):
                stores.add(n.name)
            late, declared = _function_reads(n, local)
            deferred.update(late)
            global_stores.update(declared)
        elif isinstance(n, ast.ClassDef):
            for part in [*n.decorator_list, *n.bases, *n.keywords]:
                visit(part, local)
            body_reads, body_stores, late, declared = _scan_block(n.body, local)
            reads.extend(r for r in body_reads if r not in body_stores)
            deferred.update(late)
            global_stores.update(declared)
            stores.add(n.name)
        elif isinstance(n, _COMPREHENSIONS):
            generators = n.generators
            visit(generators[0].iter, local)
            targets = {
                t.id for g in generators for t in ast.walk(g.target) if isinstance(t, ast.Name)
            }
            inner = local | targets
            for index, generator in enumerate(generators):
                if index:
                    visit(generator.iter, inner)
                for condition in generator.ifs:
                    visit(condition, inner)
            for part in (n.key, n.value) if isinstance(n, ast.DictComp) else (n.elt,):
                visit(part, inner)
        elif isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name):
            visit(n.value, local)
            if n.target.id not in local:
                reads.append(n.target.id)
            stores.add(n.target.id)
        elif isinstance(n, ast.NamedExpr):
            visit(n.value, local)
            stores.add(n.target.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for alias in n.names:
                if alias.name != "*":
                    stores.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(n, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and n.name:
            stores.add(n.name)
            for child in ast.iter_child_nodes(n):
                visit(child, local)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            stores.add(n.rest)
            for child in ast.iter_child_nodes(n):
                visit(child, local)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            pass
        else:
            for child in ast.iter_child_nodes(n):
                visit(child, local)

    visit(node, local)
    return reads, stores, deferred, global_stores


def _scan_block(statements: list[ast.stmt], local: frozenset[str]):
    reads: list[str] = []
    stores: set[str] = set()
    deferred: set[str] = set()
    global_stores: set[str] = set()
    for statement in statements:
        r, s, d, g = _scan(statement, local)
        reads += r
        stores |= s
        deferred |= d
        global_stores |= g
    return reads, stores, deferred, global_stores


def _evaluated_at_definition(function) -> list[ast.AST]:
    """Decorators, defaults and annotations: evaluated where the function is defined."""
    args = function.args
    parts = [
        *getattr(function, "decorator_list", []),
        *args.defaults,
        *(d for d in args.kw_defaults if d),
    ]
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    parts += [a.annotation for a in every if a is not None and a.annotation is not None]
    if getattr(function, "returns", None) is not None:
        parts.append(function.returns)
    return parts


def _function_reads(function, enclosing: frozenset[str]) -> tuple[set[str], set[str]]:
    """Module-level names a function body reads when it runs, and those it declares global."""
    args = function.args
    params = {
        a.arg
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        if a
    }
    body = function.body if isinstance(function.body, list) else [function.body]
    declared = {
        name
        for statement in body
        for n in ast.walk(statement)
        if isinstance(n, ast.Global)
        for name in n.names
    }
    _, stores, _, _ = _scan_block(body, enclosing | params)
    local = (enclosing | params | stores) - declared
    reads, stores, deferred, global_stores = _scan_block(body, frozenset(local))
    return set(reads) | deferred, (declared & stores) | global_stores


class ModuleNames:
    """Walks a cell's statements in execution order, as the module-level code they are."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.needs: set[str] = set()
        self.wants: set[str] = set()
        self.deferred: set[str] = set()
        self.global_stores: set[str] = set()
        self.star_modules: list[str] = []

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, (ast.For, ast.AsyncFor)):
            self.now(node.iter)
            self.now(node.target)
            self.block(node.body + node.orelse)
        elif isinstance(node, (ast.While, ast.If)):
            self.now(node.test)
            self.block(node.body + node.orelse)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.now(item.context_expr)
                if item.optional_vars is not None:
                    self.now(item.optional_vars)
            self.block(node.body)
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            self.block(node.body)
            for handler in node.handlers:
                if handler.type is not None:
                    self.now(handler.type)
                if handler.name:
                    self.bound.add(handler.name)
                self.block(handler.body)
            self.block(node.orelse + node.finalbody)
        elif isinstance(node, ast.Match):
            self.now(node.subject)
            for case in node.cases:
                self.now(case.pattern)
                if case.guard is not None:
                    self.now(case.guard)
                self.block(case.body)
        elif isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            if node.level == 0 and node.module:
                self.star_modules.append(node.module)
        else:
            self.now(node)

    def block(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            self.statement(statement)

    def now(self, node: ast.AST) -> None:
        """Code that runs at this point: reads before its own bindings."""
        reads, stores, deferred, global_stores = _scan(node, frozenset())
        for name in reads:
            if name in self.bound:
                continue
            (self.wants if name in stores else self.needs).add(name)
        self.bound |= stores
        self.deferred |= deferred
        self.global_stores |= global_stores


def bound_names(code: str) -> frozenset[str]:
    """The names ``code`` binds in the namespace it runs in (assignments, imports, ``def`` and
    ``class``, loop, ``with`` and ``except`` targets, ``:=``, and what its functions declare
    ``global``). Code that does not parse binds nothing that can be told."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return frozenset()
    names = ModuleNames()
    names.block(tree.body)
    return frozenset(names.bound | names.global_stores)


def statement_binds(statement: ast.stmt) -> frozenset[str]:
    """The names one top-level statement binds (as ``bound_names`` counts them)."""
    names = ModuleNames()
    names.statement(statement)
    return frozenset(names.bound | names.global_stores)
