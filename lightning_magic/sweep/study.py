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
    """A new study, or with ``--storage`` the one kept in that journal file (continued)."""
    optuna = optuna_module()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep's table says it all
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                "grid": optuna.samplers.BruteForceSampler}
    pruner = optuna.pruners.MedianPruner() if flags.pruner == "median" \
        else optuna.pruners.NopPruner()
    with warnings.catch_warnings():  # BruteForceSampler is "experimental": asked for by name
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = samplers[flags.sampler]()
    return optuna.create_study(storage=_storage(optuna, flags.storage), sampler=sampler,
                               pruner=pruner, direction=flags.direction, study_name=STUDY_NAME,
                               load_if_exists=flags.storage is not None)


def _storage(optuna: Any, path: Any) -> Any:
    if path is None:
        return None
    journal = optuna.storages.journal if hasattr(optuna.storages, "journal") else None
    backend = getattr(journal, "JournalFileBackend", None)
    if backend is None:  # Optuna 3.x
        backend = optuna.storages.JournalFileStorage
    return optuna.storages.JournalStorage(backend(path))
