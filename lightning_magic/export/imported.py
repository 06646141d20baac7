"""What a class a cell imports is, read from its module's source without importing it.

``from lightning.pytorch.demos.boring_classes import BoringModel`` in a cell that is exported (not
run) names a class the kernel may not hold yet. A module already loaded is asked directly; any
other is found on ``sys.path`` as the import system would find a plain ``.py`` file, parsed, and
its class followed through the names the module imports, until one of Lightning's own classes
(told apart by the package it comes from) or nothing known. Nothing is executed or imported.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Optional

LIGHTNING = ("lightning.pytorch", "pytorch_lightning", "lightning")
KINDS = {"LightningModule": "module", "LightningDataModule": "datamodule"}
MAX_DEPTH = 8


def imported_names(tree: ast.Module) -> dict[str, tuple[str, Optional[str]]]:
    """``{local name: (module, attribute or None for the module itself)}`` a piece of code
    imports at its top level (relative imports are left out: a cell has no package)."""
    names: dict[str, tuple[str, Optional[str]]] = {}
    for statement in tree.body:
        if isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
            for alias in statement.names:
                if alias.name != "*":
                    names[alias.asname or alias.name] = (statement.module, alias.name)
        elif isinstance(statement, ast.Import):
            for alias in statement.names:
                if alias.asname:
                    names[alias.asname] = (alias.name, None)
                else:  # import a.b binds a
                    top = alias.name.split(".")[0]
                    names[top] = (top, None)
    return names


def module_file(module: str) -> Optional[Path]:
    """The ``.py`` file of ``module`` on ``sys.path`` (a plain file or package), else None."""
    parts = module.split(".")
    for entry in sys.path:
        base = Path(entry or ".").joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


class StaticClass:
    """``(kind, package, takes_no_arguments, defines train_dataloader)`` of ``module.name``."""

    def __init__(self, module: str, name: str) -> None:
        self.kind: Optional[str] = None
        self.package: Optional[str] = None
        self.takes_no_arguments = False
        self.train_dataloader = False
        self.known = self._follow(module, name, 0)

    def _follow(self, module: str, name: str, depth: int) -> bool:
        if depth > MAX_DEPTH:
            return False
        if name in KINDS and module.startswith(LIGHTNING):
            self.kind = self.kind or KINDS[name]
            self.package = self.package or ("pytorch_lightning" if module.startswith(
                "pytorch_lightning") else "lightning.pytorch")
            return True
        path = module_file(module)
        if path is None:
            return False
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            return False
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for statement in tree.body:
            if isinstance(statement, ast.ClassDef) and statement.name == name:
                return self._class(statement, module, tree, depth)
        for statement in tree.body:  # re-exported: from .core import Thing
            if isinstance(statement, ast.ImportFrom):
                source = _absolute(statement, package)
                for alias in statement.names:
                    if (alias.asname or alias.name) == name and source:
                        return self._follow(source, alias.name, depth + 1)
        return False

    def _class(self, node: ast.ClassDef, module: str, tree: ast.Module, depth: int) -> bool:
        methods = {s.name: s for s in node.body if isinstance(s, (ast.FunctionDef,
                                                                   ast.AsyncFunctionDef))}
        own_init = "__init__" in methods
        if own_init:
            args = methods["__init__"].args
            positional = [*args.posonlyargs, *args.args][1:]
            self.takes_no_arguments = len(positional) <= len(args.defaults) and all(
                d is not None for d in args.kw_defaults)
        self.train_dataloader = self.train_dataloader or "train_dataloader" in methods
        names = imported_names(tree)
        found = False
        for base in node.bases:
            target = _base_target(base, module, names)
            if target is not None:
                inherited = StaticClass.__new__(StaticClass)
                inherited.kind = inherited.package = None
                inherited.takes_no_arguments, inherited.train_dataloader = True, False
                if inherited._follow(*target, depth + 1):
                    found = True
                    self.kind = self.kind or inherited.kind
                    self.package = self.package or inherited.package
                    self.train_dataloader = self.train_dataloader or inherited.train_dataloader
                    if not own_init:
                        self.takes_no_arguments = inherited.takes_no_arguments
        return found


def _base_target(base: ast.expr, module: str, names: dict) -> Optional[tuple[str, str]]:
    """``(module, class name)`` a base class expression names, in ``module``'s terms."""
    if isinstance(base, ast.Name):
        if base.id in names:
            source, attribute = names[base.id]
            return (source, attribute) if attribute else None
        return module, base.id  # a class of the same module
    if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
        if base.value.id in names and names[base.value.id][1] is None:
            return names[base.value.id][0], base.attr
        if base.value.id in names:  # from lightning import pytorch as pl; pl.LightningModule
            source, attribute = names[base.value.id]
            return f"{source}.{attribute}", base.attr
    return None


def _absolute(statement: ast.ImportFrom, package: str) -> Optional[str]:
    if not statement.level:
        return statement.module
    parts = package.split(".") if package else []
    if statement.level - 1 > len(parts):
        return None
    base = parts[: len(parts) - statement.level + 1]
    return ".".join(base + ([statement.module] if statement.module else [])) or None
