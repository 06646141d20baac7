"""Background runs (``%%lightning_train --background``): the cell returns while its ranks train.

The rule of this folder: it drives runs of ``train/`` without blocking the cell; it uses
``train/``'s own seams (``NotebookLauncher.begin``, ``start_ranks``, ``run_ranks``, ``finish``),
it does not copy them. It starts no process itself: ``train/`` forks, on the cell's thread (a
``--detach`` run's supervisor too: ``train.launch.detached``); here a thread only waits for the
ranks, and results come back on the kernel's main thread, between cells (IPython's
``pre_run_cell``/``post_run_cell``) or at ``wait()``.

- ``handle``: ``BackgroundRun``, what a Trainer call gives back at once (``wait``, ``done``,
  ``stop``, ``status``, ``metrics``, ``history``); ``stop_button``: its stop presses.
- ``runner``: the cell's Trainer calls started in the background; ``leases``: what a run holds
  (its GPUs, its Trainer, its model) and the wait for it.
- ``runs``: this kernel's runs, their delivery at cell boundaries; ``listing``:
  ``%lightning_runs``.
- ``journal``: a run's journal appended in its run folder; ``journal_reading``: a journal read
  as the hostile input any file on disk is; ``follow``: a live view kept up with a journal;
  ``attach``: ``lightning_magic.attach(ID)`` for this kernel's runs and runs found on disk (a
  ``JournalRun``), and the runs still running on disk that ``%lightning_runs`` lists;
  ``index``: where each run's journal is, so ``attach`` finds a run wherever its folder is;
  ``weights``: ``run.load_into(model)``.
- ``detach``: the kernel's side of a ``--detach`` run, whose events reach it through its journal.
"""

from .runs import RUNS, install, uninstall

__all__ = ["RUNS", "install", "uninstall"]
