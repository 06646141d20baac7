"""The kernel's side of a ``%%lightning_train`` cell: the cell itself, the Trainer it makes and
every check made before a fork.

The rule of this room: it runs in the kernel, before any rank exists. It may use the launch,
what comes back and the rank-side code; none of those import it.

- ``execute``: the cell run as IPython would, in the notebook's namespace.
- ``trainer``: the cell's Trainer under the magic (``Intercept``, ``MagicTrainer``); ``build``:
  its arguments (the user's, the hardware, the magic's callbacks).
- ``discovery``: the model and data a cell made; ``guards``: every pre-fork check;
  ``cuda_watch``: which cell initialized CUDA in the kernel.
"""
