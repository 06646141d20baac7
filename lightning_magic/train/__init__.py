"""One ``%%lightning_train`` cell's training, in forked ranks.

The rule of this folder: it is the only package that starts processes, and the only one that
imports Lightning's trainer machinery. The kernel side prepares (``prepare``: flags resolved
against the hardware, the checkpoint folder, every pre-fork guard) and runs (``run``: the cell,
then its training); the ranks run Lightning's own loops.

- ``run``: ``prepare`` and ``run`` of one cell; ``cell``: executing the cell itself.
- ``trainer``: the cell's Trainer made by the magic (``Intercept``, ``MagicTrainer``);
  ``build``: its arguments; ``strategies``: Lightning's strategies with the notebook launcher;
  ``sharded``: model_parallel and FSDP runs; ``namespaces``: ``lightning.pytorch`` and
  ``pytorch_lightning`` alike.
- ``session``: what a Trainer keeps from its cell, and one launch's kernel side.
- ``checkpoints``: run folders, ``--resume``; ``placement``: where checkpoints go, as in plain
  Lightning; ``transfer``: rank 0's state into the kernel;
  ``predictions``: predict's batches shared by the ranks, and merged back in order;
  ``saving``: checkpoints written atomically; ``loggers``: a logger across a Trainer's calls.
- ``discovery``: the model and data a cell made; ``guards``: every pre-fork check.
- ``cuda_watch``: which cell initialized CUDA in the kernel.
- ``launcher`` (start and end ranks, rank-side work), ``supervision_loop`` (the kernel's wait),
  ``supervision`` (root cause, stalls, ending process groups), ``interrupts`` (stop presses),
  ``leftovers`` (what a run leaves behind, the reaper); ``control``: state shared by the kernel
  and its ranks; ``wire``: what ranks send travels as bytes.
- ``rank``: code that runs inside a rank; ``callbacks``: the run's Lightning callbacks.
- ``events``: rank 0 -> kernel progress events; ``failures``: what is known when a run fails.
- ``results``: ``TrainingRun``, what a cell gives back.
"""

from .run import CellResult, prepare, run

__all__ = ["CellResult", "prepare", "run"]
