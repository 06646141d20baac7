"""Every check made before the ranks are forked: each refuses, with the fix, what would otherwise
fail in every rank (or poison the kernel). Each guard is a small ``_check_...`` function."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError

from .discovery import Found


def check_before_fork(found: Found) -> None:
    """Refuse, with the fix, what would otherwise fail in every rank (CUDA initialized in the
    kernel is refused by the magic, which knows the cells)."""
    from .. import namespaces

    model = namespaces.unwrap_compiled(found.model)
    _check_hooks(model)
    _check_training_data(model, found.train, found.datamodule)


def check_before_call(trainer: Any, name: str, args: tuple, kwargs: dict[str, Any]) -> None:
    """Before a Trainer method forks its ranks: CUDA untouched in the kernel, and for ``fit`` a
    module with the hooks Lightning needs and data to train on."""
    from .. import namespaces

    session = trainer._lightning_magic
    prepared = session.prepared
    if prepared is not None:
        check_cuda_not_initialized(prepared.cuda_watch, prepared.cell, prepared.cell_number)
    _check_ckpt_path(name, args, kwargs)
    mesh_check = getattr(trainer.strategy, "check_mesh", None)  # see train.sharded
    if mesh_check is not None:
        mesh_check()
    if name != "fit":
        return
    model = args[0] if args else kwargs.get("model")
    model = namespaces.unwrap_compiled(model)
    if model is None or not namespaces.is_module(model):
        return  # Lightning's own error says what fit() takes
    train = args[1] if len(args) > 1 else kwargs.get("train_dataloaders")
    datamodule = args[3] if len(args) > 3 else kwargs.get("datamodule")
    if namespaces.is_datamodule(train):
        train, datamodule = None, train
    _check_hooks(model)
    _check_training_data(model, train, datamodule)
    strategy_check = getattr(trainer.strategy, "check_before_fork", None)  # see train.sharded
    if strategy_check is not None:
        strategy_check(model)


# where each Trainer method takes ckpt_path positionally (Lightning 2's signatures)
_CKPT_POSITION = {"fit": 4, "validate": 2, "test": 2, "predict": 4}
_CKPT_WORDS = ("best", "last", "hpc", "registry")


def _check_ckpt_path(name: str, args: tuple, kwargs: dict[str, Any]) -> None:
    """A checkpoint file the call names is whole, as ``--resume`` checks its own: otherwise
    every rank would fail on it."""
    import os

    from ..launch.checkpoints import check_whole

    position = _CKPT_POSITION[name]
    path = args[position] if len(args) > position else kwargs.get("ckpt_path")
    if not isinstance(path, (str, os.PathLike)):
        return
    text = os.fspath(path)
    word = text.lower()
    if not text or word in _CKPT_WORDS or word.startswith("registry:") or "://" in text:
        return  # Lightning's own names, and remote files, are Lightning's to resolve
    check_whole(os.path.abspath(text), text, asked="ckpt_path", call=name)


def _overridden(hook: str, model: Any) -> bool:
    from .. import namespaces

    return namespaces.overrides(model, hook)


def _check_hooks(model: Any) -> None:
    missing = [hook for hook in ("training_step", "configure_optimizers")
               if not _overridden(hook, model)]
    if missing:
        names = " and ".join(f"{h}()" for h in missing)
        close = _close_names(type(model), missing)
        hint = f" ({close} looks like a misspelling)" if close else ""
        raise UsageError(f"{type(model).__name__} has no {names}{hint}: Lightning needs both "
                         "training_step(self, batch, batch_idx) and configure_optimizers(self).")


def _close_names(cls: type, wanted: list[str]) -> str:
    import difflib

    own = [n for n in vars(cls) if not n.startswith("__")]
    hits = [m for w in wanted for m in difflib.get_close_matches(w, own, n=1, cutoff=0.8)]
    return ", ".join(hits)


def _check_training_data(model: Any, train: Any, datamodule: Any) -> None:
    from ...source.choosing import no_training_data

    if train is None and datamodule is None and not _overridden("train_dataloader", model):
        raise UsageError(no_training_data(type(model).__name__))


class Refused(UsageError):
    """A pre-fork refusal that comes with a full report (shown above the one-line error)."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


def check_cuda_not_initialized(cuda_watch: Any, cell: str, cell_number: int) -> None:
    """Forked ranks cannot use CUDA once the kernel initialized it: name the cell that did."""
    from .cuda_watch import cuda_initialized, guess

    if not cuda_initialized():
        return
    # an earlier cell, as the hooks recorded it, or else this very cell
    culprit = cuda_watch.culprit
    if culprit is None and cuda_watch.initialized_by_current_cell():
        culprit = guess(cell, set(), cell_number)
    if culprit is None:
        where = ""
    elif culprit.cell is None:
        where = f" It happened in {culprit.reason}."
    else:
        where = f" It happened in cell [{culprit.cell}]: {culprit.reason}"
        where += f" ({culprit.source_line})." if culprit.source_line else "."
    from ...suggestions import Failure, explain

    context = {"cuda_culprit": {"cell": culprit.cell, "reason": culprit.reason}} \
        if culprit is not None else {}
    raise Refused("CUDA is already initialized in this kernel, so forked training processes "
                  f"cannot use it.{where} Restart the kernel, and keep CUDA work (.cuda(), "
                  "torch.cuda.*) out of the notebook's own cells.",
                  explain(Failure(kind="cuda_initialized", context=context)))
