"""One launch of ranks, as the kernel sees it: the run's folder, starting the ranks, waiting on
them and ending them.

The rule of this room: it is the kernel's end of a launch. It starts processes (with train/'s
other rooms, the only code that does) and may use what comes back and the rank-side code, never
the cell's side (``train.kernel``).

- ``session``: what a Trainer keeps from its cell, and one launch's kernel side.
- ``strategies``: Lightning's strategies with the notebook launcher; ``launcher``: start and end
  ranks, and the work each rank does first and last.
- ``checkpoints``: the run folders and which checkpoint ``--resume`` continues from;
  ``placement``: where checkpoints go, as in plain Lightning when the cell gives a logger or a
  ``default_root_dir``.
- ``supervision_loop``: the kernel's wait; ``supervision``: the root cause, stalls, ending process
  groups; ``interrupts``: stop presses; ``leftovers``: what a run leaves behind, the reaper;
  ``detached``: a ``--detach`` launch's supervisor, out of the kernel's session.
- ``openmp``: the kernel's OpenMP pool given back before the fork, so a rank computes as fast.
- ``control``: state shared by the kernel and its ranks; ``events``: the kernel's end of rank 0's
  progress pipe.
"""
