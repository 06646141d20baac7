"""Which object a cell trains and which it trains on, read from the cell's code.

The cell is not run: its code is read with ``ast``, and the classes it names are looked up in
the kernel's namespace (the cells that define them already ran). The rules are those of
``%%lightning_train``: the LightningModule the cell binds (or the subclass it defines, if that
takes no arguments); a LightningDataModule, else DataLoaders (with two, the one whose name
contains "val" validates), else the module's own ``train_dataloader``. ``--model``, ``--data``
and ``--val-data`` name them outright. Lightning itself is never imported here.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass

from IPython.core.error import UsageError

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


class Roles:
    """The LightningModules, LightningDataModules and DataLoaders a cell binds, by name."""

    def __init__(self, code: str, earlier_code: list[str], namespace: dict) -> None:
        self.namespace = namespace
        self.classes: dict[str, _Class] = {}  # classes the cell defines
        self.bindings: dict[str, _Class | None] = {}  # name -> class of the instance, in order
        # Functions the script defines, to see what a factory such as make_loader() returns.
        self.functions = {
            statement.name: statement
            for source in [*earlier_code, code]
            for statement in ast.parse(source).body
            if isinstance(statement, ast.FunctionDef)
        }
        for statement in ast.parse(code).body:
            if isinstance(statement, ast.ClassDef):
                self.classes[statement.name] = self._class_of_definition(statement)
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

    def _class(self, expression: ast.expr) -> _Class | None:
        if isinstance(expression, ast.Name) and expression.id in self.classes:
            return self.classes[expression.id]
        return _live_class(self._live(expression))

    def _live(self, expression: ast.expr):
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
        if isinstance(value, ast.Call):
            return self._class(value.func)
        if local and isinstance(value, ast.Name) and value.id in local:
            return self._class_of_value(local[value.id], None, depth + 1)
        if isinstance(value, ast.Name) and value.id in self.bindings:
            return self.bindings[value.id]
        if isinstance(value, ast.Name):
            return _instance_class(self.namespace.get(value.id))
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

    def _kind(self, name: str) -> str | None:
        cls = self.bindings.get(name)
        return cls.kind if cls else None

    def _named(self, kind: str) -> list[str]:
        return [name for name in self.bindings if self._kind(name) == kind]

    def _bound(self) -> str:
        return f" (it binds {', '.join(self.bindings)})" if self.bindings else ""

    def model(self, model_name: str | None) -> tuple[_Class | None, str, bool]:
        """``(its class, the name, whether the name is a class to instantiate)``."""
        if model_name:
            if model_name in self.bindings:
                return self.bindings[model_name], model_name, False
            cls = self._class(ast.Name(model_name))
            if cls is not None and cls.kind == "module":
                return cls, model_name, True
            return _instance_class(self.namespace.get(model_name)), model_name, False
        instances = self._named("module")
        if len(instances) == 1:
            return self.bindings[instances[0]], instances[0], False
        if len(instances) > 1:
            raise UsageError(
                f"The cell binds {len(instances)} LightningModules ({', '.join(instances)}); "
                f"pass --model NAME to say which one to train, e.g. --model {instances[0]}"
            )
        classes = [name for name, c in self.classes.items() if c.kind == "module"]
        buildable = [name for name in classes if self.classes[name].takes_no_arguments]
        if len(buildable) == 1:
            return self.classes[buildable[0]], buildable[0], True
        if len(buildable) > 1:
            raise UsageError(
                f"The cell defines {len(buildable)} LightningModule classes "
                f"({', '.join(buildable)}) "
                f"and binds no instance; pass --model NAME to say which one to train"
            )
        if classes:
            raise UsageError(
                f"{classes[0]} takes arguments, so it cannot be built on its own; bind an instance "
                f"in the cell (model = {classes[0]}(...)) or pass --model NAME"
            )
        raise UsageError(
            f"Found no LightningModule in the cell{self._bound()}: bind one (model = MyModel()), "
            "define a LightningModule subclass that takes no arguments, or pass --model NAME"
        )

    def data(
        self,
        model: str,
        model_class: _Class | None,
        data_name: str | None,
        val_data_name: str | None,
    ) -> tuple[str | None, str | None, str | None]:
        """``(datamodule, train dataloaders, val dataloaders)`` names for ``trainer.fit``."""
        if data_name:
            if data_name in self.bindings:
                kind = self._kind(data_name)
            else:
                kind = (_instance_class(self.namespace.get(data_name)) or _Class()).kind
            if kind == "datamodule":
                return data_name, None, val_data_name
            return None, data_name, val_data_name
        datamodules = self._named("datamodule")
        if len(datamodules) > 1:
            raise UsageError(
                f"The cell binds {len(datamodules)} LightningDataModules "
                f"({', '.join(datamodules)}); "
                f"pass --data NAME to say which one to train on"
            )
        if datamodules:
            return datamodules[0], None, val_data_name
        loaders = self._named("dataloader")
        if len(loaders) == 1:
            return None, loaders[0], val_data_name
        if len(loaders) > 1:
            validation = [name for name in loaders if "val" in name.lower()]
            training = [name for name in loaders if "val" not in name.lower()]
            if len(loaders) == 2 and len(validation) == 1:
                return None, training[0], val_data_name or validation[0]
            raise UsageError(
                f"The cell binds {len(loaders)} DataLoaders ({', '.join(loaders)}) and which one "
                "is for training is unclear; pass --data NAME (and --val-data NAME). With two, "
                "the one whose name contains 'val' is taken for validation."
            )
        if (
            model_class is not None
            and model_class.kind == "module"
            and not model_class.train_dataloader
        ):
            raise UsageError(
                f"Found no training data in the cell{self._bound()}: it binds no "
                f"LightningDataModule or DataLoader and {model_class.name} defines no "
                "train_dataloader; "
                "bind one or pass --data NAME"
            )
        return None, None, val_data_name
