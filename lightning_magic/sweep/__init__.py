"""Sweeps (``%%lightning_sweep``): Optuna trials of one cell, on disjoint devices.

The rule of this folder: a trial is a ``--background`` run of ``train/``, started and brought
back through ``background/``'s own seams (``Runner``, ``BackgroundRun``); nothing here forks,
and nothing here copies how a run starts, ends or comes back. The study lives in the kernel and
is asked and told there (Optuna's ask-and-tell), so a trial's parameters are drawn once, in the
kernel, before its ranks are forked: every rank of a trial has the same ones. Optuna is an
optional extra, imported inside functions.

- ``flags``: the magic's own flags, and the ``%%lightning_train`` flags each trial runs with;
  ``slots``: the machine's devices cut into disjoint slots, one trial a slot.
- ``study``: the Optuna study (sampler, pruner, journal storage); ``trials``: one trial, from
  ask to tell; ``loop``: trials on free slots until the sweep is done.
- ``results``: ``Sweep`` (``lightning_sweep``); ``table``: the live table in the cell.
- ``background``: ``--background``, the cell returns at once with ``SweepRun``, the sweep's
  handle; the same loop advances between cells.
"""

from typing import Any

from .trials import Context

__all__ = ["Context", "run_sweep"]


def run_sweep(context: Context) -> Any:
    """The cell's sweep: the finished ``Sweep``, or with ``--background`` its ``SweepRun`` at
    once."""
    if context.flags.background:
        from .background import start

        return start(context)
    from .loop import run_sweep as in_the_foreground

    return in_the_foreground(context)
