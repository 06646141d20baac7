"""Which model a ``%%lightning_train`` cell trains and which data it trains on: the rules and
their messages, once, for training (``train.kernel.discovery``, which sees the objects the cell made)
and for ``--export`` (``export.roles``, which reads the cell's code without running it).

Each side describes what a name holds as a :class:`Held`; the rules below pick from those.

- **Model:** ``--model NAME`` (an instance, or a LightningModule class that takes no arguments),
  else the one LightningModule instance the cell binds (two names for one module are one model,
  and so are a module and ``torch.compile`` of it, which is the one trained), else an instance
  of the one LightningModule class the cell defines that takes no arguments.
- **Data:** ``--data NAME`` (a LightningDataModule or a DataLoader), else the one
  LightningDataModule the cell binds, else the DataLoaders it binds: one trains; of several, the
  one whose name does not contain "val" trains and the one whose name does validates (or
  ``--val-data NAME`` does). Else the module's own ``train_dataloader``.

A choice that is not clear is a ``UsageError`` that names the candidates and the flag to use.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Optional

from IPython.core.error import UsageError

Kind = Literal["module", "module class", "datamodule", "dataloader", "other"]


@dataclass(frozen=True)
class Held:
    """What one name holds, as far as the side asking can tell."""

    kind: Optional[Kind]  # None: not known (export: a call whose result the code does not say)
    type_name: str = ""  # the type's name, for messages ("Tensor")
    takes_no_arguments: bool = False  # for a module class
    defined_by_cell: bool = False  # a class the cell itself defines
    same_as: Optional[str] = None  # another name for this model (an alias, or the module this
    #                                name holds torch.compile of): the two are one model


# name -> what it holds, or None where no such variable exists
Lookup = Callable[[str], Optional[Held]]


@dataclass(frozen=True)
class ModelChoice:
    name: str
    instantiate: bool  # the name is a class: train a new instance of it


@dataclass(frozen=True)
class DataChoice:
    datamodule: Optional[str] = None
    train: Optional[str] = None  # None with no datamodule: the module's own train_dataloader
    val: Optional[str] = None


def choose_model(bound: dict[str, Held], name: Optional[str], lookup: Lookup,
                 known: Iterable[str] = ()) -> ModelChoice:
    """The model to train from what the cell ``bound`` (in order), or the one ``--model name``
    names (``lookup`` finds it; ``known`` are the names that exist, for a spelling hint)."""
    if name is not None:
        held = _named("--model", name, bound, lookup, known)
        if held.kind == "module class":
            _check_buildable([name], [held])
            return ModelChoice(name, instantiate=True)
        if held.kind not in (None, "module"):
            raise UsageError(f"--model {name}: {name} is {_a(held.type_name)}, not a "
                             "LightningModule; name a LightningModule instance or class.")
        return ModelChoice(name, instantiate=False)
    instances = [n for n, held in bound.items() if held.kind == "module"]
    others = {bound[n].same_as for n in instances}
    instances = [n for n in instances if n not in others]
    if len(instances) == 1:
        return ModelChoice(instances[0], instantiate=False)
    if len(instances) > 1:
        raise UsageError(f"The cell binds {len(instances)} LightningModules "
                         f"({', '.join(instances)}): say which to train with --model NAME, "
                         f"for example --model {instances[0]}.")
    classes = [n for n, held in bound.items()
               if held.kind == "module class" and held.defined_by_cell]
    buildable = [n for n in classes if bound[n].takes_no_arguments]
    if len(buildable) == 1:
        return ModelChoice(buildable[0], instantiate=True)
    if len(buildable) > 1:
        raise UsageError(f"The cell defines {len(buildable)} LightningModule classes "
                         f"({', '.join(buildable)}) and binds no instance: create the one to "
                         f"train, for example model = {buildable[0]}(), or name it with "
                         "--model NAME.")
    if classes:
        _check_buildable(classes, [bound[n] for n in classes])
    raise UsageError(f"The cell binds no LightningModule{_binds(bound)}: bind one "
                     "(model = MyModel()), define one LightningModule class that takes no "
                     "arguments, or name one made in an earlier cell with --model NAME.")


def _check_buildable(names: list[str], held: list[Held]) -> None:
    """Refuse a module class that cannot be built without arguments."""
    needing = [n for n, h in zip(names, held) if not h.takes_no_arguments]
    if len(needing) == 1:
        raise UsageError(f"{needing[0]} needs constructor arguments, so %%lightning_train "
                         "cannot build it: create it in the cell, for example "
                         f"model = {needing[0]}(...).")
    if needing:
        raise UsageError(f"{' and '.join(needing)} need constructor arguments, so "
                         "%%lightning_train cannot build them: create the one to train in the "
                         f"cell, for example model = {needing[0]}(...).")


def choose_data(bound: dict[str, Held], data: Optional[str], val_data: Optional[str],
                lookup: Lookup, known: Iterable[str] = ()) -> DataChoice:
    """The data to train on from what the cell ``bound``, or ``--data`` / ``--val-data``."""
    if data is not None:
        held = _named("--data", data, bound, lookup, known)
        if held.kind not in (None, "datamodule", "dataloader"):
            raise UsageError(f"--data {data}: {data} is {_a(held.type_name)}, not a "
                             "LightningDataModule or a DataLoader; name one of those.")
        chosen = (DataChoice(datamodule=data) if held.kind == "datamodule"
                  else DataChoice(train=data))
    else:
        chosen = _data_the_cell_binds(bound, val_data is not None)
    if val_data is not None:
        held = _named("--val-data", val_data, bound, lookup, known)
        if held.kind not in (None, "dataloader"):
            raise UsageError(f"--val-data {val_data}: {val_data} is {_a(held.type_name)}, "
                             "not a DataLoader; name a DataLoader.")
        chosen = DataChoice(chosen.datamodule, chosen.train, val_data)
    return chosen


def _data_the_cell_binds(bound: dict[str, Held], val_given: bool) -> DataChoice:
    modules = [n for n, held in bound.items() if held.kind == "datamodule"]
    if len(modules) > 1:
        raise UsageError(f"The cell binds {len(modules)} LightningDataModules "
                         f"({', '.join(modules)}): say which to train on with --data NAME.")
    if modules:
        return DataChoice(datamodule=modules[0])
    loaders = [n for n, held in bound.items() if held.kind == "dataloader"]
    if len(loaders) <= 1:
        return DataChoice(train=loaders[0] if loaders else None)
    validation = [n for n in loaders if "val" in n.lower()]
    training = [n for n in loaders if n not in validation]
    if len(training) == 1 and (len(validation) == 1 or val_given):
        return DataChoice(train=training[0], val=None if val_given else validation[0])
    raise UsageError(f"The cell binds {len(loaders)} DataLoaders ({', '.join(loaders)}) and "
                     "which is for training is unclear: say so with --data NAME (and "
                     "--val-data NAME), or bind one for training and one whose name contains "
                     "'val' for validation.")


def no_training_data(model_type: str) -> str:
    """The message for a module with neither data from the cell nor a ``train_dataloader``."""
    return (f"There is no training data for {model_type}: the cell made no LightningDataModule "
            "or DataLoader, and the module has no train_dataloader(). Create one in the cell "
            "(train_loader = DataLoader(...)) or name it with --data NAME.")


def _named(flag: str, name: str, bound: dict[str, Held], lookup: Lookup,
           known: Iterable[str]) -> Held:
    held = bound[name] if name in bound else lookup(name)
    if held is None:
        close = difflib.get_close_matches(name, [k for k in known if not k.startswith("_")], n=1)
        hint = (f"did you mean {flag} {close[0]}?" if close
                else "run the cell that makes it first, or check the spelling.")
        raise UsageError(f"{flag} {name}: there is no variable {name!r} in the notebook; {hint}")
    return held


def _binds(bound: dict[str, Held], most: int = 6) -> str:
    names = [n for n, held in bound.items() if held.kind != "other" or held.type_name != "module"]
    if not names:
        return ""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    shown = ", ".join(names[:most]) + more
    return f" (it binds {shown})"


def _a(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"
