"""Lightning ships under two names: ``lightning.pytorch`` and the standalone ``pytorch_lightning``.
They are the same code but different classes, so a Trainer from one takes only strategies,
callbacks and modules of that same one. This module tells which namespace an object belongs to
and hands out that namespace's classes."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

NAMES = ("lightning.pytorch", "pytorch_lightning")


def loaded() -> list[ModuleType]:
    """The namespaces this process has imported (``lightning.pytorch`` always: the magic uses it)."""
    import lightning.pytorch

    spaces = [lightning.pytorch]
    if "pytorch_lightning" in sys.modules:
        spaces.append(sys.modules["pytorch_lightning"])
    return spaces


def importable(name: str) -> ModuleType | None:
    import importlib
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def of(obj: Any) -> ModuleType | None:
    """The namespace whose LightningModule, LightningDataModule, Trainer or Callback ``obj`` is
    (an instance or a class), or None."""
    for space in loaded():
        bases = (space.LightningModule, space.LightningDataModule, space.Trainer,
                 space.Callback)
        if isinstance(obj, bases) or (isinstance(obj, type) and issubclass(obj, bases)):
            return space
    return None


def is_module(obj: Any) -> bool:
    return any(isinstance(obj, space.LightningModule) for space in loaded())


def is_module_class(obj: Any) -> bool:
    return isinstance(obj, type) and any(
        issubclass(obj, space.LightningModule) and obj is not space.LightningModule
        for space in loaded())


def is_datamodule(obj: Any) -> bool:
    return any(isinstance(obj, space.LightningDataModule) for space in loaded())


def overrides(module: Any, hook: str) -> bool:
    """Whether ``module``'s class defines ``hook`` itself (Lightning's ``is_overridden``)."""
    return bool(of(module).utilities.model_helpers.is_overridden(hook, module))


def unwrap_compiled(obj: Any) -> Any:
    """The LightningModule inside ``torch.compile(module)``, else ``obj`` itself."""
    inner = getattr(obj, "_orig_mod", None)
    if inner is not None and is_module(inner) and not is_module(obj):
        return inner
    return obj
