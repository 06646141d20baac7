"""Find the LightningModule, the data and the callbacks a ``%%lightning_train`` cell made.

The cell runs in the user's namespace; comparing the namespace before and after tells which names
the cell bound. The rules, and their messages, are ``lightning_magic.source.choosing``'s: ``--export``
reads the same choice from the cell's code.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional

from ...source.names import bound_names
from ...source.choosing import Held, choose_data, choose_model
from .. import namespaces


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
    """Names the cell bound: those whose object changed, and those its code binds (a cell run
    again may bind a name to the very object it had), in namespace order."""
    assigned = assigned_names(source)
    return {name: value for name, value in namespace.items()
            if not name.startswith("_") and (before.get(name) != id(value) or name in assigned)}


def assigned_names(source: str) -> frozenset[str]:
    """The names a cell's code binds (``cell_names.bound_names``), its magics and shell escapes
    read as IPython runs them."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        code = TransformerManager().transform_cell(source)
    except SyntaxError:
        return frozenset()
    return bound_names(code)


def discover(namespace: dict[str, Any], bound: dict[str, Any], model: Optional[str] = None,
             data: Optional[str] = None, val_data: Optional[str] = None) -> Found:
    """Pick the model and data by ``choosing``'s rules (``--model``/``--data``/``--val-data``
    name them outright), from the objects the cell ``bound``."""
    held = _held(bound)

    def lookup(name: str) -> Optional[Held]:
        return _held({name: namespace[name]})[name] if name in namespace else None

    model_choice = choose_model(held, model, lookup, namespace)
    data_choice = choose_data(held, data, val_data, lookup, namespace)
    chosen = namespace[model_choice.name]
    if model_choice.instantiate:
        found = Found(model=chosen(), model_name=None, instantiated=True)
    else:
        found = Found(model=chosen, model_name=model_choice.name)
    if data_choice.datamodule is not None:
        found.data_name = data_choice.datamodule
        found.datamodule = namespace[data_choice.datamodule]
    elif data_choice.train is not None:
        found.data_name, found.train = data_choice.train, namespace[data_choice.train]
    if data_choice.val is not None:
        found.val_name, found.val = data_choice.val, namespace[data_choice.val]
    return found


def bound_callbacks(bound: dict[str, Any]) -> dict[str, list[Any]]:
    """The Lightning callbacks the cell bound, by name: a callback, or a list or tuple of them
    (for a cell whose Trainer the magic makes)."""
    found = {}
    for name, value in bound.items():
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if items and all(_is_callback(item) for item in items):
            found[name] = items
    return found


def _is_callback(obj: Any) -> bool:
    return not isinstance(obj, type) and any(isinstance(obj, space.Callback)
                                             for space in namespaces.loaded())


def _held(values: dict[str, Any]) -> dict[str, Held]:
    """What each object is, in ``choosing``'s terms; a second name for a module, or for the
    module inside a compiled one, says the first."""
    from torch.utils.data import DataLoader

    first: dict[int, str] = {}
    for name, value in values.items():
        if namespaces.is_module(namespaces.unwrap_compiled(value)):
            first.setdefault(id(value), name)
    held: dict[str, Held] = {}
    for name, value in values.items():
        type_name = "class" if inspect.isclass(value) else type(value).__name__
        inner = namespaces.unwrap_compiled(value)
        if namespaces.is_module_class(value):
            held[name] = Held("module class", type_name, _takes_no_arguments(value),
                              defined_by_cell=value.__module__ == "__main__")
        elif namespaces.is_module(inner):
            same = first[id(value)] if first[id(value)] != name else first.get(id(inner))
            held[name] = Held("module", type_name, same_as=same if same != name else None)
        elif namespaces.is_datamodule(value):
            held[name] = Held("datamodule", type_name)
        elif isinstance(value, DataLoader):
            held[name] = Held("dataloader", type_name)
        else:
            held[name] = Held("other", type_name)
    return held


def _takes_no_arguments(cls: type) -> bool:
    try:
        inspect.signature(cls).bind()
    except (TypeError, ValueError):
        return False
    return True
