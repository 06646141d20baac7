"""What comes back from rank 0 into the kernel's Trainer, so that after the cell it reads like a
finished Lightning Trainer: the trained weights (strictly: a weight that cannot be matched back is
an error), the trainer state and loop progress (``current_epoch``, ``global_step``), callback
metrics, ``should_stop`` and ``estimated_stepping_batches``, each callback's state
(EarlyStopping's ``stopped_epoch``, ModelCheckpoint's ``best_model_path`` and ``best_k_models``,
a user callback's counters), each logger's version, and, for one process, the random state
(later cells draw what they would have drawn after training in the kernel itself).

``collect`` runs in rank 0; ``restore`` in the kernel. Only plain data crosses: numbers, strings,
paths, tensors (moved to the CPU) and containers of those; never data sets or loaders.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

PLAIN = (type(None), bool, int, float, complex, str, bytes, PurePath)
MAX_ITEMS = 10_000
COMPILED = "_orig_mod."


class WeightsMismatch(RuntimeError):
    """The trained weights do not fit the kernel's model."""


def collect(trainer: Any) -> dict[str, Any]:
    from ..ranks.callbacks import MAGIC_CALLBACKS

    states = {}
    for callback in trainer.callbacks:
        if not isinstance(callback, MAGIC_CALLBACKS):
            states[callback.state_key] = plain_attributes(callback)
    versions = [getattr(logger, "version", None) for logger in trainer.loggers]
    connector = trainer._logger_connector
    extra = {"callback_states": states, "logger_versions": [
        v if isinstance(v, (int, str)) else None for v in versions],
        "logged_metrics": _plain(dict(connector.logged_metrics), 0),
        "progress_bar_metrics": _plain(dict(connector.progress_bar_metrics), 0)}
    extra["should_stop"] = bool(trainer.should_stop)
    from ..ranks.setups import captured

    extra["setup_states"] = captured()  # replayed in later launches (see setups)
    if trainer.state.fn.value == "fit":
        extra["fit_loop"] = _plain(trainer.fit_loop.state_dict(), 0)
        try:  # the fit's data stays in the ranks; the kernel's Trainer answers with this
            value = trainer.estimated_stepping_batches  # an int, or inf
            if isinstance(value, (int, float)):
                extra["estimated_stepping_batches"] = value
        except Exception:  # noqa: BLE001 - Lightning's own error, when asked in the kernel
            pass
    # what a tuner (or the user's hooks) set on the module and the data: lr, batch_size, hparams
    extra["module_attributes"] = public_attributes(trainer.lightning_module)
    if trainer.datamodule is not None:
        extra["datamodule_attributes"] = public_attributes(trainer.datamodule)
    from ..ranks.sharded import gather_extra

    extra.update(gather_extra(trainer))  # a sharded model: whether its full state came back
    if trainer.state.fn.value == "fit":
        extra["fit_stopped"] = fit_limit(trainer)
    why = early_stop(trainer)
    if why:
        extra.setdefault("notes", []).append(why)
    if trainer.world_size == 1:
        from lightning.fabric.utilities.seed import _collect_rng_states

        extra["rng_states"] = _collect_rng_states(include_cuda=False)
    return extra


def fit_limit(trainer: Any) -> str:
    """In rank 0 after a fit: Lightning's own words for the limit that ended it (its fit loop
    logs them at INFO, which the ranks keep out of the cell), or ''."""
    from lightning.pytorch.loops.utilities import _is_max_limit_reached

    loop = trainer.fit_loop
    if getattr(loop, "max_batches", None) == 0:
        return "`Trainer.fit` stopped: No training batches."
    if _is_max_limit_reached(loop.epoch_loop.global_step, loop.max_steps):
        return f"`Trainer.fit` stopped: `max_steps={loop.max_steps!r}` reached."
    if _is_max_limit_reached(loop.epoch_progress.current.processed, loop.max_epochs):
        return f"`Trainer.fit` stopped: `max_epochs={loop.max_epochs!r}` reached."
    return ""


def early_stop(trainer: Any) -> str:
    """In rank 0 after a fit that stopped before its limits: which callback stopped it."""
    if trainer.state.fn.value != "fit" or not trainer.should_stop:
        return ""
    for callback in trainer.callbacks:
        kind = type(callback).__name__
        if kind == "Timer" and callable(getattr(callback, "time_remaining", None)) and \
                (callback.time_remaining() or 0) <= 0:
            duration = getattr(callback, "_duration", None)
            return (f"Training stopped early: max_time ({duration:g} s) ran out after step "
                    f"{trainer.global_step}." if duration else
                    "Training stopped early: max_time ran out.")
        if kind == "EarlyStopping" and getattr(callback, "stopped_epoch", 0):
            return (f"Training stopped early: EarlyStopping({callback.monitor!r}) stopped it in "
                    f"epoch {callback.stopped_epoch} (patience {callback.patience}).")
    return ""


def restore(trainer: Any, output: Any, extra: dict[str, Any], launcher: Any,
            datamodule: Any = None) -> None:
    """In the kernel; ``datamodule`` is the one the call was given (the kernel's Trainer never
    attached it)."""
    if output.weights_path is not None:
        io = launcher._strategy.checkpoint_io
        if extra.get("sharded_gather", {}).get("gathered", True):  # else: a note says where
            load_weights(trainer.lightning_module, io.load_checkpoint(output.weights_path))
        io.remove_checkpoint(output.weights_path)
    if trainer.checkpoint_callback is not None and output.best_model_path:
        trainer.checkpoint_callback.best_model_path = str(output.best_model_path)
    trainer.state = output.trainer_state
    trainer.callback_metrics.clear()  # as in one process: this call's metrics, not the last's
    launcher.update_main_process_results(trainer, extra)  # Lightning's: callback_metrics
    connector = trainer._logger_connector
    for name in ("logged_metrics", "progress_bar_metrics"):
        if name in extra:
            getattr(connector, f"_{name}").clear()
            getattr(connector, f"_{name}").update(extra[name])
    states = extra.get("callback_states", {})
    for callback in trainer.callbacks:
        state = states.get(callback.state_key)
        if state:
            vars(callback).update(state)
    for logger, version in zip(trainer.loggers, extra.get("logger_versions", []), strict=False):
        if version is not None and hasattr(logger, "_version"):
            logger._version = version
    if "fit_loop" in extra:
        trainer.fit_loop.load_state_dict(extra["fit_loop"])
    if "should_stop" in extra:
        trainer.should_stop = extra["should_stop"]
    if "estimated_stepping_batches" in extra:
        trainer._magic_stepping_batches = extra["estimated_stepping_batches"]
    for owner, key in ((trainer.lightning_module, "module_attributes"),
                       (datamodule or trainer.datamodule, "datamodule_attributes")):
        for name, value in (extra.get(key) or {}).items() if owner is not None else ():
            if not _same(getattr(owner, name, _MISSING), value):
                setattr(owner, name, value)
    if "rng_states" in extra:  # one process: the kernel goes on as if it had trained itself
        from lightning.fabric.utilities.seed import _set_rng_states

        _set_rng_states(extra["rng_states"])


def load_weights(module: Any, state: dict[str, Any]) -> None:
    """Load ``state`` into ``module`` with every key matched. Weights of a part compiled in the
    ranks (``torch.compile`` in ``configure_model``: keys with ``_orig_mod.``) go to the same part
    of the kernel's uncompiled module."""
    own = module.state_dict()
    if set(state) != set(own):
        state = {_uncompiled(key, own): value for key, value in state.items()}
    if set(state) - set(own) and _makes_layers(module):
        from ..ranks.sharded import materialize

        refused = materialize(module)
        if refused:
            raise WeightsMismatch(refused)
        own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the kernel's weights were not trained in the ranks "
                         f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} trained weights have no place in the kernel's "
                         f"{type(module).__name__} ({', '.join(unexpected[:4])}"
                         f"{', ...' if len(unexpected) > 4 else ''})")
        raise WeightsMismatch(
            "The trained weights do not fit the kernel's model: " + "; ".join(parts) + ". The "
            "model's layers differ between the kernel and the ranks (layers made in "
            "configure_model or setup?). Nothing was loaded; the run's checkpoints hold the "
            "trained weights.")
    # layers on the meta device (made so in the kernel, or by materialize) take the trained
    # tensors themselves; the others copy them in place
    meta = any(tensor.is_meta for tensor in own.values())
    module.load_state_dict(state, strict=True, assign=meta)


def _makes_layers(module: Any) -> bool:
    from .. import namespaces

    try:
        return namespaces.overrides(module, "configure_model")
    except Exception:  # noqa: BLE001 - not a LightningModule of a known namespace
        return False


def _uncompiled(key: str, own: dict[str, Any]) -> str:
    if key in own or COMPILED not in key:
        return key
    return key.replace(COMPILED, "")


_MISSING = object()


def _same(current: Any, value: Any) -> bool:
    try:
        return bool(current == value)
    except Exception:  # noqa: BLE001 - tensors and other values without a plain ==
        return current is value


def public_attributes(obj: Any) -> dict[str, Any]:
    """The public attributes of ``obj`` that are plain data (a module's own; its layers,
    parameters and Lightning's bookkeeping live in private attributes)."""
    return {name: value for name, value in plain_attributes(obj).items()
            if not name.startswith("_")}


def plain_attributes(obj: Any) -> dict[str, Any]:
    """The attributes of ``obj`` that are plain data (see the module's docstring)."""
    found = {}
    for name, value in vars(obj).items():
        if name.startswith("__"):
            continue
        try:
            found[name] = _plain(value, 0)
        except Exception:  # noqa: BLE001 - not plain data (or a container that cannot be rebuilt)
            continue
    return found


class _NotPlain(Exception):
    pass


def _plain(value: Any, depth: int) -> Any:
    import torch

    if isinstance(value, PLAIN):
        return value
    if isinstance(value, torch.Tensor):
        from ..ranks.sharded import whole_local

        local = whole_local(value)  # a DTensor's mesh means nothing in the kernel
        if local is None:
            raise _NotPlain
        return local.detach().cpu().clone()
    if depth > 6:
        raise _NotPlain
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            raise _NotPlain
        return type(value)((_plain(k, depth + 1), _plain(v, depth + 1)) for k, v in value.items()) \
            if type(value) is not dict else {_plain(k, depth + 1): _plain(v, depth + 1)
                                             for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)) and type(value) in (list, tuple, set,
                                                                             frozenset):
        if len(value) > MAX_ITEMS:
            raise _NotPlain
        return type(value)(_plain(item, depth + 1) for item in value)
    return _plain_object(value, depth)


def _plain_object(value: Any, depth: int) -> Any:
    """A small object made only of plain data (a tuner's result, say), copied whole."""
    import torch

    from torch.utils.data import DataLoader, Dataset, Sampler

    state = getattr(value, "__dict__", None)
    if state is None or callable(value) or len(state) > 64 or \
            isinstance(value, (torch.nn.Module, Dataset, DataLoader, Sampler)):
        raise _NotPlain  # data stays in the ranks: a later launch replays its setup (setups)
    copy = object.__new__(type(value))
    copy.__dict__.update({name: _plain(item, depth + 1) for name, item in state.items()})
    return copy
