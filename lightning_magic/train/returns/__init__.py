"""What comes back from the ranks to the kernel.

The rule of this room: it turns what rank 0 sent into what the cell gives back (the kernel's
Trainer and model, a ``TrainingRun``, a failure report); it may use the rank-side code (to read
what a rank captured), never the kernel's side or the launch.

- ``wire``: what ranks send travels as bytes; ``transfer``: rank 0's state into the kernel's
  Trainer and model; ``results``: ``TrainingRun`` and ``TrainingFailed``; ``failures``: what is
  known when a run fails, for ``suggestions.explain``.
"""
