"""Code that runs inside a forked rank.

The rule of this room: it is what a rank runs besides Lightning's own loops, and it knows nothing
of the kernel's side: it imports no other room of train/.

- ``rank``: process setup after the fork, output capture, warnings kept once; ``errors``: what a
  rank reports of an exception its code raised.
- ``callbacks``: the Lightning callbacks the magic adds (events, heartbeat and stop,
  ``last.ckpt``); ``history``: the logged values by step (``TrainingRun.history``); ``hooks``:
  the magic's callbacks as one callback in the Trainer, and hooks a callback does not use,
  skipped; ``saving``: checkpoints written atomically.
- ``loggers``: a logger across a Trainer's launches; ``setups``: a data module's setup history,
  replayed; ``predictions``: predict's batches shared by the ranks, and merged back in order.
- ``sharded``: model_parallel and FSDP runs (strategy, notes, gathering full weights).
- ``progress_bar``: Lightning's bar in a notebook, its validation bar on the training bar's line.
"""
