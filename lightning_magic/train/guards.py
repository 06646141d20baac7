"""Every check made before the ranks are forked: each refuses, with the fix, what would otherwise
fail in every rank (or poison the kernel). Each guard is a small ``_check_...`` function."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError

from .discovery import Found


def check_before_fork(found: Found) -> None:
    """Refuse, with the fix, what would otherwise fail in every rank (CUDA initialized in the
    kernel is refused by the magic, which knows the cells)."""
    _check_hooks(found.model)
    _check_training_data(found)


def _check_hooks(model: Any) -> None:
    from lightning.pytorch.utilities.model_helpers import is_overridden

    missing = [hook for hook in ("training_step", "configure_optimizers")
               if not is_overridden(hook, model)]
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


def _check_training_data(found: Found) -> None:
    from lightning.pytorch.utilities.model_helpers import is_overridden

    if found.train is None and found.datamodule is None \
            and not is_overridden("train_dataloader", found.model):
        raise UsageError(
            f"There is no training data for {type(found.model).__name__}: the cell made no "
            "LightningDataModule or DataLoader, and the module has no train_dataloader(). Create "
            "one in the cell (train_loader = DataLoader(...)) or name it with --data NAME.")


class Refused(UsageError):
    """A pre-fork refusal that comes with a full report (shown above the one-line error)."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


def check_cuda_not_initialized(cuda_watch: Any, cell: str, execution_count: int) -> None:
    """Forked ranks cannot use CUDA once the kernel initialized it: name the cell that did."""
    from .cuda_watch import cuda_initialized, guess

    if not cuda_initialized():
        return
    # an earlier cell, as the hooks recorded it, or else this very cell
    culprit = cuda_watch.culprit
    if culprit is None and cuda_watch.initialized_by_current_cell():
        culprit = guess(cell, set(), execution_count)
    if culprit is None:
        where = ""
    elif culprit.cell is None:
        where = f" It happened in {culprit.reason}."
    else:
        where = f" It happened in cell [{culprit.cell}]: {culprit.reason}"
        where += f" ({culprit.source_line})." if culprit.source_line else "."
    from ..suggestions import Failure, explain

    context = {"cuda_culprit": {"cell": culprit.cell, "reason": culprit.reason}} \
        if culprit is not None else {}
    raise Refused("CUDA is already initialized in this kernel, so forked training processes "
                  f"cannot use it.{where} Restart the kernel, and keep CUDA work (.cuda(), "
                  "torch.cuda.*) out of the notebook's own cells.",
                  explain(Failure(kind="cuda_initialized", context=context)))
