"""The Optuna study a sweep asks and tells, in the kernel: its sampler, pruner and storage from
the flags. Optuna is an optional extra, imported here, when a sweep starts."""

from __future__ import annotations

import warnings
from typing import Any

from IPython.core.error import UsageError

from .flags import SweepFlags

STUDY_NAME = "lightning_sweep"


def optuna_module() -> Any:
    try:
        import optuna
    except ImportError:
        raise UsageError("%%lightning_sweep needs Optuna, which is not installed: pip install "
                         "'lightning_magic[sweep]' (or pip install optuna pandas), then run the "
                         "cell again; the kernel need not be restarted.") from None
    return optuna


def make_study(flags: SweepFlags) -> Any:
    """A new study, or with ``--storage FILE --resume`` the one kept in that journal file,
    continued; a FILE that holds the study without ``--resume`` is a ``UsageError``."""
    optuna = optuna_module()
    storage = _storage(optuna, flags.storage)
    if storage is not None and not flags.resume:
        _check_not_kept(optuna, storage, flags.storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep's table says it all
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                "grid": optuna.samplers.BruteForceSampler}
    pruner = optuna.pruners.MedianPruner() if flags.pruner == "median" \
        else optuna.pruners.NopPruner()
    with warnings.catch_warnings():  # BruteForceSampler is "experimental": asked for by name
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = samplers[flags.sampler]()
    return optuna.create_study(storage=storage, sampler=sampler, pruner=pruner,
                               direction=flags.direction, study_name=STUDY_NAME,
                               load_if_exists=flags.resume)


def _check_not_kept(optuna: Any, storage: Any, path: str) -> None:
    if STUDY_NAME not in optuna.get_all_study_names(storage=storage):
        return
    count = len(optuna.load_study(study_name=STUDY_NAME, storage=storage).trials)
    raise UsageError(f"--storage {path!r} already holds {count} trial{'s' * (count != 1)} of "
                     f"study {STUDY_NAME!r}: pass --resume to continue it, or choose another "
                     "--storage file.")


def _storage(optuna: Any, path: Any) -> Any:
    if path is None:
        return None
    journal = optuna.storages.journal if hasattr(optuna.storages, "journal") else None
    backend = getattr(journal, "JournalFileBackend", None)
    if backend is None:  # Optuna 3.x
        backend = optuna.storages.JournalFileStorage
    return optuna.storages.JournalStorage(backend(path))
