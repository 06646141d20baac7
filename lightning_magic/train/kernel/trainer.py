"""The cell's own Trainer, as the magic builds it: every argument the user gave kept, the hardware
from the flags (else the cell's arguments, else auto), always forked.

While a ``%%lightning_train`` cell runs, ``Trainer.__init__`` of ``lightning.pytorch`` (and of
``pytorch_lightning`` where the cell uses it) is wrapped (``Intercept``): a Trainer the cell makes
gets the notebook strategy and the magic's callbacks, and becomes a ``MagicTrainer`` whose
``fit``/``validate``/``test``/``predict`` run in forked ranks, in this cell and in later ones,
and raise ``RanksFailed`` (with the run's record) when the ranks did not finish: the magic turns
it into its report. In a later cell without the magic the call binds the record and raises
``TrainingFailed`` itself.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import Any

from .. import namespaces
from .build import trainer_arguments


class RanksFailed(Exception):
    """A Trainer method whose ranks did not finish; carries the launch's ``TrainingRun``."""

    def __init__(self, record: Any) -> None:
        super().__init__(record.status)
        self.record = record


class Intercept:
    """A context manager: Trainers made inside it are made by the magic (see the docstring)."""

    active = 0  # how many %%lightning_train cells are running (their cell's body, nested)

    def __init__(self, prepared: Any) -> None:
        self.prepared = prepared
        self.trainers: list[Any] = []
        self._originals: list[tuple[type, Any]] = []

    def __enter__(self) -> "Intercept":
        spaces = namespaces.loaded()
        if "pytorch_lightning" in self.prepared.cell and len(spaces) == 1:
            extra = namespaces.importable("pytorch_lightning")
            if extra is not None:
                spaces.append(extra)
        for space in spaces:
            cls = space.Trainer
            original = cls.__dict__["__init__"]
            self._originals.append((cls, original))
            cls.__init__ = self._wrap(space, original)
        Intercept.active += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        Intercept.active -= 1
        for cls, original in self._originals:
            cls.__init__ = original
        self._originals.clear()

    def launches(self) -> list[tuple[str, Any]]:
        return [entry for trainer in self.trainers for entry in trainer._lightning_magic.records]

    def _wrap(self, space: ModuleType, original: Any) -> Any:
        intercept = self

        def __init__(trainer: Any, **kwargs: Any) -> None:  # noqa: N807 - replaces __init__
            if getattr(trainer, "_lightning_magic", None) is not None:  # a subclass's super()
                return original(trainer, **kwargs)
            merged, session = trainer_arguments(space, kwargs, intercept.prepared)
            trainer._lightning_magic = session
            build(trainer, original, merged, session)
            trainer.__class__ = magic_class(type(trainer))
            intercept.trainers.append(trainer)

        __init__.__wrapped__ = original  # type: ignore[attr-defined]
        return __init__


def build(trainer: Any, original: Any, kwargs: dict[str, Any], session: Any) -> None:
    """Lightning's own ``__init__`` with the merged arguments; its kernel-side warnings are kept
    for the run (once each) instead of the cell."""
    from ..ranks.rank import from_library, quiet_lightning_logs, restore_logs

    previous = quiet_lightning_logs()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            original(trainer, **kwargs)
    finally:
        restore_logs(previous)
    session.kernel_warnings = [f"{w.category.__name__}: {w.message}" for w in caught
                               if not from_library(w.filename)]
    session.library_warnings = [f"{w.category.__name__}: {w.message}" for w in caught
                                if from_library(w.filename)]


_MAGIC: dict[type, type] = {}


def magic_class(base: type) -> type:
    """``base`` (a Trainer class) whose entry points raise ``RanksFailed`` when ranks fail."""
    if getattr(base, "_is_magic_trainer", False):
        return base
    if base not in _MAGIC:
        _MAGIC[base] = type(base.__name__, (base,), {
            "_is_magic_trainer": True, "__module__": base.__module__,
            "__qualname__": base.__qualname__,
            **{name: _entry_point(base, name) for name in ("fit", "validate", "test", "predict")},
            "estimated_stepping_batches": _stepping_batches(base),
        })
    return _MAGIC[base]


def _entry_point(base: type, name: str) -> Any:
    original = getattr(base, name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        from .guards import check_before_call

        check_before_call(self, name, args, kwargs)
        if name == "fit":
            kwargs = _with_resume(self, args, kwargs)
            self._magic_stepping_batches = None  # the ranks compute this fit's own
        launcher = self.strategy.launcher
        launcher.record = launcher.handle = None
        result = original(self, *args, **kwargs)
        if launcher.handle is not None:  # started in the background: its handle, at once
            return launcher.handle
        if launcher.record is not None and not launcher.record.ok:
            self.state.status = type(self.state.status)("interrupted")
            if Intercept.active:
                raise RanksFailed(launcher.record)  # the magic binds and reports it
            raise _failed_in_a_later_cell(self, launcher.record)
        return result

    method.__name__ = method.__qualname__ = name
    method.__doc__ = original.__doc__
    return method


def _stepping_batches(base: type) -> property:
    """Lightning's ``estimated_stepping_batches``; in the kernel after a fit, whose data stayed
    in the ranks, rank 0's answer."""
    computed = base.estimated_stepping_batches

    def estimated_stepping_batches(self: Any) -> Any:
        known = getattr(self, "_magic_stepping_batches", None)
        return known if known is not None else computed.fget(self)

    return property(estimated_stepping_batches, doc=computed.__doc__)


def _failed_in_a_later_cell(trainer: Any, record: Any) -> Exception:
    """A call in a cell without the magic failed: its record is bound as the magic binds it (to
    ``lightning_run`` or the cell's ``--out``), its report is shown, and the error ends the cell
    in one line."""
    from IPython import get_ipython
    from IPython.display import display

    from ..returns.results import ending

    out = trainer._lightning_magic.flags.out
    shell = get_ipython()
    if shell is not None:
        shell.user_ns[out] = record
    if record.report is not None:
        display(record.report)
    return ending(record, out, in_magic_cell=False)


def _with_resume(trainer: Any, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``--resume`` for a fit that names no ``ckpt_path`` of its own; either checkpoint checked
    against the fit's ``max_epochs`` before anything is forked."""
    from ..launch.checkpoints import check_epochs, resume_path

    session = trainer._lightning_magic
    own = args[4] if len(args) > 4 else kwargs.get("ckpt_path")
    if isinstance(own, (str, os.PathLike)) and os.path.exists(own):
        check_epochs(os.fspath(own), os.fspath(own), trainer.max_epochs, asked="ckpt_path")
    if session.flags.resume is None or own or len(args) > 4:
        return kwargs
    model = namespaces.unwrap_compiled(args[0] if args else kwargs.get("model"))
    path = resume_path(session.flags, session.cwd, model, trainer)
    check_epochs(path, session.flags.resume, trainer.max_epochs)
    return dict(kwargs, ckpt_path=path)
