"""Which object a cell trains and which it trains on, read from the cell's code.

The cell is not run: its code is read with ``ast``, and the classes it names are looked up in
the kernel's namespace (the cells that define them already ran). What each name holds is told
to ``lightning_magic.source.choosing``, whose rules and messages are those of ``%%lightning_train``
itself. Lightning itself is never imported here; ``lightning.pytorch`` and ``pytorch_lightning``
classes are told apart by the module they come from.
"""

from __future__ import annotations

import ast
import inspect
import sys
from dataclasses import dataclass

from IPython.core.error import UsageError

from ..source.names import bound_names
from .imported import StaticClass, imported_names
from ..source.choosing import Held, choose_data, choose_model, no_training_data

LIGHTNING_PACKAGES = ("lightning.pytorch", "pytorch_lightning")


@dataclass(frozen=True)
class _Class:
    name: str = ""
    kind: str | None = None  # "module" | "datamodule" | "dataloader"
    package: str | None = None  # the Lightning package it derives from
    takes_no_arguments: bool = False
    train_dataloader: bool = False  # defines its own


def _live_class(cls) -> _Class | None:
    """What a class the kernel holds is, or None for anything but a class."""
    if not inspect.isclass(cls):
        return None
    kind, package = _live_kind(cls)
    return _Class(
        cls.__name__,
        kind,
        package,
        _live_takes_no_arguments(cls),
        _live_defines_train_dataloader(cls),
    )


def _instance_class(value) -> _Class | None:
    return None if value is None else _live_class(type(value))


def _live_kind(cls) -> tuple[str | None, str | None]:
    """``("module" | "datamodule" | "dataloader" | None, lightning package)`` of a class."""
    for base in inspect.getmro(cls):
        module = getattr(base, "__module__", "") or ""
        package = next((p for p in LIGHTNING_PACKAGES if module.startswith(p)), None)
        if package and base.__name__ == "LightningModule":
            return "module", package
        if package and base.__name__ == "LightningDataModule":
            return "datamodule", package
        if base.__name__ == "DataLoader" and module.startswith("torch.utils.data"):
            return "dataloader", None
    return None, None


def _live_defines_train_dataloader(cls) -> bool:
    return any(
        "train_dataloader" in vars(base)
        for base in inspect.getmro(cls)
        if not (getattr(base, "__module__", "") or "").startswith(LIGHTNING_PACKAGES)
    )


def _live_takes_no_arguments(cls) -> bool:
    try:
        inspect.signature(cls).bind()
    except (TypeError, ValueError):
        return False
    return True


def _is_compile(function) -> bool:
    """``torch.compile`` (the kernel's own object; torch is not imported here)."""
    return callable(function) and getattr(function, "__name__", "") == "compile" and (
        getattr(function, "__module__", "") or ""
    ).startswith("torch")


def _held(cls: _Class | None, same_as: str | None = None) -> Held:
    """What an instance of ``cls`` is, in ``choosing``'s terms (``None``: not known)."""
    if cls is None:
        return Held(None)
    return Held(cls.kind or "other", cls.name, same_as=same_as)


def _held_class(cls: _Class) -> Held:
    kind = "module class" if cls.kind == "module" else "other"
    return Held(kind, "class", cls.takes_no_arguments, defined_by_cell=True)


class Roles:
    """The LightningModules, LightningDataModules and DataLoaders a cell binds, by name."""

    def __init__(self, code: str, earlier_code: list[str], namespace: dict) -> None:
        self.namespace = namespace
        self.classes: dict[str, _Class] = {}  # classes the cell defines
        self.bindings: dict[str, _Class | None] = {}  # name -> class of the instance, in order
        self.held: dict[str, Held] = {}  # every name above, in the order the cell binds them
        self.binds = bound_names(code)
        # Functions the script defines, to see what a factory such as make_loader() returns.
        self.functions = {
            statement.name: statement
            for source in [*earlier_code, code]
            for statement in ast.parse(source).body
            if isinstance(statement, ast.FunctionDef)
        }
        self.imported = imported_names(ast.parse(code))  # read from source where not loaded
        for statement in ast.parse(code).body:
            if isinstance(statement, ast.ClassDef):
                self.classes[statement.name] = self._class_of_definition(statement)
                self._bind(statement.name, _held_class(self.classes[statement.name]))
            elif isinstance(statement, (ast.Assign, ast.AnnAssign)) and statement.value is not None:
                targets = (
                    statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                )
                for target in targets:
                    if isinstance(target, ast.Name):
                        cls = self._class_of_value(statement.value)
                        if cls is None or cls.kind is None:
                            # A factory call: the last run of this cell may say what it returns.
                            cls = _instance_class(namespace.get(target.id)) or cls
                        self.bindings.pop(target.id, None)
                        self.bindings[target.id] = cls
                        same = self._same_model(statement.value, target.id)
                        self._bind(target.id, _held(cls, same))

    def _bind(self, name: str, held: Held) -> None:
        self.held.pop(name, None)
        self.held[name] = held

    def _same_model(self, value: ast.expr, name: str) -> str | None:
        """The name whose module ``value`` is too: ``m2 = m1``, ``compiled = torch.compile(m1)``."""
        if isinstance(value, ast.Call) and _is_compile(self._live(value.func)) and value.args:
            value = value.args[0]
        if isinstance(value, ast.Name) and value.id != name and value.id in self.held:
            return value.id
        return None

    def _lookup(self, name: str) -> Held | None:
        """A name the cell does not bind as ``self.held`` tells, as the kernel holds it."""
        if name not in self.namespace:
            return Held(None) if name in self.binds else None
        value = self.namespace[name]
        if inspect.isclass(value):
            cls = _live_class(value)
            if cls.kind == "module":
                return Held("module class", "class", cls.takes_no_arguments)
            return Held("other", "class")
        return _held(_instance_class(value))

    def _class(self, expression: ast.expr) -> _Class | None:
        if isinstance(expression, ast.Name) and expression.id in self.classes:
            return self.classes[expression.id]
        live = self._live(expression)
        if live is None and (target := self._imported_target(expression)) is not None:
            static = StaticClass(*target)
            return _Class(target[1], static.kind, static.package, static.takes_no_arguments,
                          static.train_dataloader) if static.known else None
        return _live_class(live)

    def _imported_target(self, expression: ast.expr) -> tuple[str, str] | None:
        """``(module, class name)`` of a class the cell imports: ``Name`` or ``module.Name``."""
        if isinstance(expression, ast.Name) and expression.id in self.imported:
            module, attribute = self.imported[expression.id]
            return (module, attribute) if attribute else None
        if isinstance(expression, ast.Attribute) and isinstance(expression.value, ast.Name):
            module, attribute = self.imported.get(expression.value.id, (None, None))
            if module is not None:
                return (module if attribute is None else f"{module}.{attribute}", expression.attr)
        return None

    def _live(self, expression: ast.expr):
        if isinstance(expression, ast.Name) and expression.id in self.imported:
            module, attribute = self.imported[expression.id]  # the cell's import, not the kernel's
            loaded = sys.modules.get(module)
            return loaded if attribute is None or loaded is None else getattr(loaded, attribute, None)
        if isinstance(expression, ast.Name):
            return self.namespace.get(expression.id)
        if isinstance(expression, ast.Attribute):
            return getattr(self._live(expression.value), expression.attr, None)
        return None

    def _class_of_definition(self, node: ast.ClassDef) -> _Class:
        bases = [b for b in (self._class(base) for base in node.bases) if b is not None]
        kind = next((b.kind for b in bases if b.kind), None)
        package = next((b.package for b in bases if b.package), None)
        methods = {
            s.name: s for s in node.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        if "__init__" in methods:
            args = methods["__init__"].args
            positional = [*args.posonlyargs, *args.args][1:]
            takes_no_arguments = len(positional) <= len(args.defaults) and all(
                d is not None for d in args.kw_defaults
            )
        else:
            takes_no_arguments = all(b.takes_no_arguments for b in bases)
        train_dataloader = "train_dataloader" in methods or any(b.train_dataloader for b in bases)
        return _Class(node.name, kind, package, takes_no_arguments, train_dataloader)

    def _class_of_value(
        self, value: ast.expr, local: dict | None = None, depth: int = 0
    ) -> _Class | None:
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and depth < 4:
            function = self.functions.get(value.func.id)
            if function is not None and value.func.id not in self.classes:
                return self._class_returned(function, depth + 1)
        if isinstance(value, ast.Call) and _is_compile(self._live(value.func)) and value.args:
            return self._class_of_value(value.args[0], local, depth + 1)
        if isinstance(value, ast.Call):
            return self._class(value.func)
        if local and isinstance(value, ast.Name) and value.id in local:
            return self._class_of_value(local[value.id], None, depth + 1)
        if isinstance(value, ast.Name) and value.id in self.bindings:
            return self.bindings[value.id]
        if isinstance(value, ast.Name):
            return _instance_class(self.namespace.get(value.id))
        if isinstance(value, ast.Constant):
            return _live_class(type(value.value))
        if isinstance(value, (ast.List, ast.Tuple, ast.Dict, ast.Set)):
            return _live_class({ast.List: list, ast.Tuple: tuple, ast.Dict: dict,
                                ast.Set: set}[type(value)])
        return None

    def _class_returned(self, function: ast.FunctionDef, depth: int) -> _Class | None:
        """The class of what ``function`` returns, from its annotation or return statements."""
        if function.returns is not None:
            return self._class(function.returns)
        local = {}
        returned = []
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                local[node.targets[0].id] = node.value
            elif isinstance(node, ast.Return) and node.value is not None:
                returned.append(node.value)
        classes = [self._class_of_value(value, local, depth) for value in returned]
        kinds = {c.kind for c in classes if c is not None}
        return next((c for c in classes if c is not None), None) if len(kinds) == 1 else None

    def _class_of_name(self, name: str) -> _Class | None:
        if name in self.classes:
            return self.classes[name]
        if name in self.bindings:
            return self.bindings[name]
        value = self.namespace.get(name)
        return _live_class(value) if inspect.isclass(value) else _instance_class(value)

    def model(self, model_name: str | None) -> tuple[_Class | None, str, bool]:
        """``(its class, the name, whether the name is a class to instantiate)``."""
        chosen = choose_model(self.held, model_name, self._lookup, self.namespace)
        return self._class_of_name(chosen.name), chosen.name, chosen.instantiate

    def data(
        self,
        model: str,
        model_class: _Class | None,
        data_name: str | None,
        val_data_name: str | None,
    ) -> tuple[str | None, str | None, str | None]:
        """``(datamodule, train dataloaders, val dataloaders)`` names for ``trainer.fit``."""
        chosen = choose_data(self.held, data_name, val_data_name, self._lookup, self.namespace)
        if (
            chosen.datamodule is None
            and chosen.train is None
            and model_class is not None
            and model_class.kind == "module"
            and not model_class.train_dataloader
        ):
            raise UsageError(no_training_data(model_class.name))
        return chosen.datamodule, chosen.train, chosen.val
