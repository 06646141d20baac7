"""Find the LightningModule and the data a ``%%lightning_train`` cell made.

The cell runs in the user's namespace; comparing the namespace before and after tells which names
the cell bound. The rules, in order, are in ``discover``'s docstring and in the README.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional

from IPython.core.error import UsageError

from . import namespaces


@dataclass
class Found:
    model: Any                   # a LightningModule, or torch.compile of one
    model_name: Optional[str]
    train: Any = None            # DataLoader, or None when a datamodule or the module provides it
    val: Any = None
    datamodule: Any = None
    data_name: Optional[str] = None
    val_name: Optional[str] = None
    instantiated: bool = False   # the model was built here from a class the cell defined


def namespace_snapshot(namespace: dict[str, Any]) -> dict[str, int]:
    return {name: id(value) for name, value in namespace.items() if not name.startswith("_")}


def bound_by_cell(before: dict[str, int], namespace: dict[str, Any],
                  source: str = "") -> dict[str, Any]:
    """Names the cell bound: those whose object changed, and those its code assigns (a cell run
    again may bind a name to the very object it had), in namespace order."""
    assigned = assigned_names(source)
    return {name: value for name, value in namespace.items()
            if not name.startswith("_") and (before.get(name) != id(value) or name in assigned)}


def assigned_names(source: str) -> set[str]:
    """Top-level names a cell's code binds (assignments, defs, imports, for/with targets)."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        for child in ast.walk(node):
            if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                names.add(child.id)
            elif isinstance(child, ast.alias):
                names.add((child.asname or child.name).split(".")[0])
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                    ast.Lambda)):
                break
    return names


def discover(namespace: dict[str, Any], bound: dict[str, Any], model: Optional[str] = None,
             data: Optional[str] = None, val_data: Optional[str] = None) -> Found:
    """Pick the model and data.

    Model: ``--model``, else the LightningModule instance the cell bound, else an instance of the
    only LightningModule subclass the cell defined (when it takes no arguments).
    Data: ``--data``, else a LightningDataModule the cell bound, else the DataLoader(s) the cell
    bound (with several, the one named like "val" is validation data), else the module's own
    ``train_dataloader``. ``--val-data`` names the validation DataLoader.
    """
    from torch.utils.data import DataLoader

    found = _find_model(namespace, bound, model)
    if data is not None:
        chosen = _lookup(namespace, "--data", data)
        if namespaces.is_datamodule(chosen):
            found.datamodule = chosen
        elif isinstance(chosen, DataLoader):
            found.train = chosen
        else:
            raise UsageError(f"--data {data}: {data} is a {type(chosen).__name__}, not a "
                             "LightningDataModule or a DataLoader.")
        found.data_name = data
    else:
        modules = {n: v for n, v in bound.items() if namespaces.is_datamodule(v)}
        loaders = {n: v for n, v in bound.items() if isinstance(v, DataLoader)}
        if len(modules) > 1:
            raise UsageError(f"The cell made {len(modules)} LightningDataModules "
                             f"({', '.join(modules)}): say which with --data NAME.")
        if modules:
            found.data_name, found.datamodule = next(iter(modules.items()))
        elif loaders:
            _pick_loaders(found, loaders, val_data is not None)
    if val_data is not None:
        chosen = _lookup(namespace, "--val-data", val_data)
        if not isinstance(chosen, DataLoader):
            raise UsageError(f"--val-data {val_data}: {val_data} is a {type(chosen).__name__}, "
                             "not a DataLoader.")
        found.val, found.val_name = chosen, val_data
    return found


def _find_model(namespace: dict[str, Any], bound: dict[str, Any], name: Optional[str]) -> Found:
    if name is not None:
        chosen = _lookup(namespace, "--model", name)
        if namespaces.is_module_class(chosen):
            return Found(model=_instantiate(chosen, name), model_name=None, instantiated=True)
        if not namespaces.is_module(namespaces.unwrap_compiled(chosen)):
            raise UsageError(f"--model {name}: {name} is a {type(chosen).__name__}, not a "
                             "LightningModule.")
        return Found(model=chosen, model_name=name)
    instances: dict[str, Any] = {}
    for n, v in bound.items():  # a module and torch.compile of it are one model: the compiled
        inner = namespaces.unwrap_compiled(v)
        if not namespaces.is_module(inner):
            continue
        same = [k for k, other in instances.items()
                if namespaces.unwrap_compiled(other) is inner]
        if not same:
            instances[n] = v
        elif v is not inner:
            del instances[same[0]]
            instances[n] = v
    if len(instances) == 1:
        model_name, model = next(iter(instances.items()))
        return Found(model=model, model_name=model_name)
    if len(instances) > 1:
        raise UsageError(f"The cell made {len(instances)} LightningModules "
                         f"({', '.join(instances)}): say which to train with --model NAME.")
    classes = {n: v for n, v in bound.items()
               if namespaces.is_module_class(v) and v.__module__ == "__main__"}
    if len(classes) == 1:
        class_name, cls = next(iter(classes.items()))
        return Found(model=_instantiate(cls, class_name), model_name=None, instantiated=True)
    if len(classes) > 1:
        raise UsageError(f"The cell defined {len(classes)} LightningModule classes "
                         f"({', '.join(classes)}) and made no instance: create the one to train, "
                         "for example model = MyModel(), or name it with --model NAME.")
    raise UsageError("The cell made no LightningModule. %%lightning_train trains the "
                     "LightningModule instance the cell binds (model = MyModel()), or the one "
                     "LightningModule class it defines when that class takes no arguments; "
                     "use --model NAME to pick one made in an earlier cell.")


def _instantiate(cls: type, name: str) -> Any:
    try:
        inspect.signature(cls).bind()
    except TypeError:
        raise UsageError(f"{name} needs constructor arguments, so it cannot be built for you: "
                         f"create it in the cell, for example model = {name}(...).") from None
    return cls()


def _pick_loaders(found: Found, loaders: dict[str, Any], val_given: bool) -> None:
    if len(loaders) == 1:
        found.data_name, found.train = next(iter(loaders.items()))
        return
    val_names = [n for n in loaders if "val" in n.lower()]
    train_names = [n for n in loaders if n not in val_names]
    if len(train_names) == 1 and (len(val_names) == 1 or val_given):
        found.data_name, found.train = train_names[0], loaders[train_names[0]]
        if val_names and not val_given:
            found.val_name, found.val = val_names[0], loaders[val_names[0]]
        return
    raise UsageError(f"The cell made {len(loaders)} DataLoaders ({', '.join(loaders)}) and it is "
                     "not clear which is for training: say so with --data NAME "
                     "(and --val-data NAME).")


def _lookup(namespace: dict[str, Any], flag: str, name: str) -> Any:
    if name not in namespace:
        raise UsageError(f"{flag} {name}: there is no variable {name!r} in the notebook.")
    return namespace[name]
