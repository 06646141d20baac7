"""One ``%%lightning_train`` cell's training, in forked ranks.

The rule of this folder: it is the only package that starts processes, and the only one that
imports Lightning's trainer machinery. The kernel side prepares (``prepare``: flags resolved
against the hardware, the checkpoint folder, every pre-fork guard) and runs (``run``: the cell,
then its training); the ranks run Lightning's own loops.

Four rooms, each importing only the ones after it (``tests/test_layout.py`` checks):

- ``kernel/``: the cell, its Trainer and every pre-fork check, in the kernel.
- ``launch/``: one launch of ranks as the kernel sees it: the run's folder, start, wait, end.
- ``returns/``: what comes back: rank 0's state into the kernel, ``TrainingRun``, failures.
- ``ranks/``: code that runs inside a rank.

Beside them, ``run`` (``prepare`` and ``run`` of one cell, the entry point) and ``namespaces``
(``lightning.pytorch`` and ``pytorch_lightning`` alike), which every room uses.
"""

from .run import CellResult, prepare, run

__all__ = ["CellResult", "prepare", "run"]
