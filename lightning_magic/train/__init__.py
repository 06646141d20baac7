"""One ``%%lightning_train`` cell's training, in forked ranks.

The rule of this folder: it is the only package that starts processes, and the only one that
imports Lightning's trainer machinery. The kernel side prepares (``prepare``: flags resolved
against the hardware, the checkpoint folder, every pre-fork guard) and runs (``run``: the cell,
then its training); the ranks run Lightning's own loops.

- ``run``: the ``Plan`` and the run of one cell; ``checkpoints``: where they go, ``--resume``.
- ``discovery``: the model and data a cell made; ``guards``: every pre-fork check.
- ``cuda_watch``: which cell initialized CUDA in the kernel.
- ``launcher`` (kernel side: start, watch, end ranks) and ``supervision`` (root cause, stalls,
  ending process groups); ``control``: state shared by the kernel and its ranks.
- ``rank``: code that runs inside a rank; ``callbacks``: the run's Lightning callbacks.
- ``events``: rank 0 -> kernel progress events; ``failures``: what is known when a run fails.
- ``results``: ``TrainingRun``, what a cell gives back.
"""

from .run import prepare, run
from .run import notes_before_training as run_notes

__all__ = ["prepare", "run", "run_notes"]
